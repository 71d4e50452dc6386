//! Where model files come from: a local directory, the ingress's mirror (manifest +
//! files), or the Hugging Face hub (`hf`, needs network at boot; `HF_ENDPOINT` and
//! `HF_TOKEN` are honoured). Downloads go to the cache directory, resume with `Range`
//! from a `.part` file, and are checked against their sha256 when the source gives one.

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
            let http = crate::agent::ingress_http(cfg)?.build()?;
            fetch_mirror(
                &http,
                base,
                &name,
                &cfg.cache_dir.join(&name),
                cfg.join_token.expose(),
            )
            .await
        }
        ModelSource::Hf { repo, revision } => {
            let endpoint =
                std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
            let token = std::env::var("HF_TOKEN").ok();
            let dir = cfg
                .cache_dir
                .join("hf")
                .join(repo.replace('/', "--"))
                .join(revision);
            fetch_hf(&endpoint, repo, revision, &dir, token.as_deref()).await
        }
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

/// One file to fetch.
struct Remote {
    path: String,
    url: String,
    size: Option<u64>,
    sha256: Option<String>,
}

async fn download_all(
    http: &reqwest::Client,
    source: &str,
    files: &[Remote],
    dir: &Path,
    token: Option<&str>,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for f in files {
        anyhow::ensure!(
            safe_rel(&f.path),
            "file path {:?} is not a safe relative path",
            f.path
        );
        let dest = dir.join(&f.path);
        if dest.is_file() {
            let len = std::fs::metadata(&dest)?.len();
            let size_ok = f.size.is_none_or(|s| s == len);
            let sha_ok = match &f.sha256 {
                Some(want) => size_ok && sha256_file(&dest)? == *want,
                None => size_ok,
            };
            if sha_ok {
                continue;
            }
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let part = dir.join(format!("{}.part", f.path));
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let have = if f.size.is_some_and(|s| have > s) {
            0
        } else {
            have
        };
        let mut req = http.get(&f.url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("cannot download {}", f.url))?;
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
        if let Some(want) = &f.sha256 {
            let got = sha256_file(&part)?;
            if got != *want {
                let _ = std::fs::remove_file(&part);
                anyhow::bail!(
                    "{} from {source} has sha256 {got}, expected {want}: start again to download it anew",
                    f.path
                );
            }
        }
        std::fs::rename(&part, &dest)?;
        tracing::info!(file = %f.path, "model file fetched");
    }
    Ok(())
}

async fn fetch_mirror(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    dir: &Path,
    token: &str,
) -> anyhow::Result<PathBuf> {
    let base = base.trim_end_matches('/');
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
    let files: Vec<Remote> = man
        .files
        .into_iter()
        .map(|f| Remote {
            url: format!("{base}{MODEL_MIRROR_PATH}/{name}/files/{}", f.path),
            path: f.path,
            size: Some(f.size),
            sha256: Some(f.sha256),
        })
        .collect();
    download_all(http, "the mirror", &files, dir, Some(token)).await?;
    Ok(dir.to_path_buf())
}

/// Files of a hub repository that serving needs (weights as safetensors, configs, tokenizer).
fn wanted_hf_file(name: &str) -> bool {
    !name.contains('/') && (name.ends_with(".safetensors") || name.ends_with(".json"))
}

async fn fetch_hf(
    endpoint: &str,
    repo: &str,
    revision: &str,
    dir: &Path,
    token: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let endpoint = endpoint.trim_end_matches('/');
    let http = reqwest::Client::builder().build()?;
    let url = format!("{endpoint}/api/models/{repo}/revision/{revision}?blobs=true");
    let mut req = http.get(&url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let info: serde_json::Value = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot list {repo}@{revision} on the hub ({url}); the hf source needs network at boot"))?
        .json()
        .await
        .context("the hub's answer is not valid JSON")?;
    let siblings = info
        .get("siblings")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    let files: Vec<Remote> = siblings
        .iter()
        .filter_map(|s| {
            let name = s.get("rfilename")?.as_str()?.to_string();
            if !wanted_hf_file(&name) {
                return None;
            }
            let lfs = s.get("lfs");
            Some(Remote {
                url: format!("{endpoint}/{repo}/resolve/{revision}/{name}"),
                size: lfs
                    .and_then(|l| l.get("size"))
                    .or_else(|| s.get("size"))
                    .and_then(|v| v.as_u64()),
                sha256: lfs
                    .and_then(|l| l.get("sha256"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                path: name,
            })
        })
        .collect();
    anyhow::ensure!(
        files.iter().any(|f| f.path == "config.json"),
        "{repo}@{revision} on the hub has no config.json: is it a model repository in the transformers layout?"
    );
    download_all(&http, "the hub", &files, dir, token).await?;
    Ok(dir.to_path_buf())
}
