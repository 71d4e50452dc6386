//! Where model files come from: a local directory, or the ingress's mirror (manifest +
//! files, resumed with `Range`, each checked against its sha256) into the cache directory.

use anyhow::Context;
use dayshift_config::node::{ModelConfig, ModelSource, NodeConfig};
use dayshift_config::protocol::{MODEL_MIRROR_PATH, ModelManifest};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The local directory holding `m`'s files, fetching them first when needed.
pub async fn resolve(cfg: &NodeConfig, m: &ModelConfig) -> anyhow::Result<PathBuf> {
    match &m.source {
        ModelSource::Local { path } => Ok(path.clone()),
        ModelSource::Mirror { model } => {
            let name = model.clone().unwrap_or_else(|| m.name.clone());
            let Some(base) = &cfg.ingress_url else {
                anyhow::bail!(
                    "model {:?} comes from the mirror but ingress_url is not set",
                    m.name
                );
            };
            fetch_mirror(
                base,
                &name,
                &cfg.cache_dir.join(&name),
                cfg.join_token.expose(),
            )
            .await
        }
        ModelSource::Hf { repo, .. } => anyhow::bail!(
            "model {:?}: the hf source ({repo}) is not supported by this build; download the files and use source = {{ type = \"local\", path = ... }} or the ingress mirror",
            m.name
        ),
    }
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn safe_rel(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

async fn fetch_mirror(base: &str, name: &str, dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::builder().build()?;
    let url = format!("{base}{MODEL_MIRROR_PATH}/{name}/manifest");
    let man: ModelManifest = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot get the model manifest {url}"))?
        .json()
        .await
        .context("the model manifest is not valid JSON")?;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for f in &man.files {
        anyhow::ensure!(
            safe_rel(&f.path),
            "manifest path {:?} is not a safe relative path",
            f.path
        );
        let dest = dir.join(&f.path);
        if dest.is_file()
            && std::fs::metadata(&dest)?.len() == f.size
            && sha256_file(&dest)? == f.sha256
        {
            continue;
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let part = dir.join(format!("{}.part", f.path));
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let have = if have > f.size { 0 } else { have };
        let furl = format!("{base}{MODEL_MIRROR_PATH}/{name}/files/{}", f.path);
        let mut req = http.get(&furl).bearer_auth(token);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("cannot download {furl}"))?;
        let append = have > 0 && resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&part)
            .await?;
        while let Some(chunk) = resp.chunk().await? {
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        drop(out);
        let got = sha256_file(&part)?;
        if got != f.sha256 {
            let _ = std::fs::remove_file(&part);
            anyhow::bail!(
                "{} from the mirror has sha256 {got}, the manifest says {}: download again",
                f.path,
                f.sha256
            );
        }
        std::fs::rename(&part, &dest)?;
        tracing::info!(file = %f.path, bytes = f.size, "model file fetched and verified");
    }
    Ok(dir.to_path_buf())
}
