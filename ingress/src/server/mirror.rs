//! The model mirror for nodes: `GET /internal/models/{model}/manifest` (files, sizes,
//! sha256) and `GET /internal/models/{model}/files/{path}` with `Range` support.
//! Only for nodes: a session token, or the join token of a node still expected.
//! A pool's `model_source` may be a folder (every file in it, recursively) or a single
//! file (a GGUF model): then the manifest lists that one file by its name.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dayshift_config::protocol::{ManifestFile, ModelManifest};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::auth::bearer;
use super::errors::ApiError;
use super::state::SharedState;
use crate::store::hash_secret;

/// A model folder's files: (path relative to the model, size, modification time).
pub type DirStamp = Vec<(String, u64, Option<SystemTime>)>;

/// Manifests already computed, by model, with the folder listing they were made from.
#[derive(Default)]
pub struct ManifestCache(Mutex<HashMap<String, (DirStamp, ModelManifest)>>);

/// The folder (or single model file, e.g. a `.gguf`) served for `model`: the pool's
/// `model_source` when it is a local folder or file, else `<state_dir>/models/<model>`.
pub fn model_dir(state: &SharedState, model: &str) -> Option<PathBuf> {
    let pool = state.config.pools.values().find(|p| p.model == model)?;
    let src = Path::new(&pool.model_source);
    if pool.model_source != "mirror"
        && !pool.model_source.starts_with("hf:")
        && (src.is_dir() || src.is_file())
    {
        return Some(src.to_path_buf());
    }
    Some(state.models_dir.join(model))
}

/// Checks the node credentials for `model`.
async fn authorize(state: &SharedState, headers: &HeaderMap, model: &str) -> Result<(), ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("the model mirror is for registered nodes only"))?;
    let hash = hash_secret(token);
    let pool_ok = |pool: &str| {
        state
            .config
            .pools
            .get(pool)
            .is_some_and(|p| p.model == model)
    };
    if let Some(n) = state.registry.session(&hash) {
        return if pool_ok(&n.pool) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this node's pool does not serve that model",
            ))
        };
    }
    let now = state.clock.now().timestamp_millis();
    for n in state.store.list_nodes(false).await? {
        if n.join_token_hash.as_deref() == Some(hash.as_str()) {
            let fresh =
                n.registered_at.is_some() || n.join_token_expires_at.is_none_or(|e| now <= e);
            if fresh && pool_ok(&n.pool) {
                return Ok(());
            }
            return Err(ApiError::forbidden(
                "join token expired or not for this model",
            ));
        }
    }
    Err(ApiError::unauthorized("unknown node credentials"))
}

/// The file behind manifest path `rel`: `root` itself when the model is a single file.
pub fn file_path(root: &Path, rel: &str) -> PathBuf {
    if root.is_file() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The files of a model folder (or the one file a single-file model is), sorted.
pub fn list_files(root: &Path) -> std::io::Result<DirStamp> {
    let mut out = Vec::new();
    if root.is_file() {
        let meta = std::fs::metadata(root)?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, meta.len(), meta.modified().ok()));
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let p = entry.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let meta = entry.metadata()?;
                let rel = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                out.push((rel, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The manifest (paths, sizes, sha256) of the files in `stamp`.
pub fn compute_manifest(
    model: &str,
    root: &Path,
    stamp: &DirStamp,
) -> std::io::Result<ModelManifest> {
    let mut files = Vec::new();
    for (rel, size, _) in stamp {
        let mut f = std::fs::File::open(file_path(root, rel))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        files.push(ManifestFile {
            path: rel.clone(),
            size: *size,
            sha256: hex::encode(h.finalize()),
        });
    }
    Ok(ModelManifest {
        model: model.to_string(),
        files,
    })
}

async fn manifest_for(state: &SharedState, model: &str) -> Result<ModelManifest, ApiError> {
    let root = model_dir(state, model)
        .ok_or_else(|| ApiError::not_found(format!("no pool serves `{model}`")))?;
    let r = root.clone();
    let stamp = tokio::task::spawn_blocking(move || list_files(&r))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            ApiError::not_found(format!(
                "model `{model}` is not in the mirror ({}: {e})",
                root.display()
            ))
        })?;
    if let Ok(cache) = state.manifests.0.lock()
        && let Some((s, m)) = cache.get(model)
        && *s == stamp
    {
        return Ok(m.clone());
    }
    let (m2, r2, s2) = (model.to_string(), root.clone(), stamp.clone());
    let manifest = tokio::task::spawn_blocking(move || compute_manifest(&m2, &r2, &s2))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "reading model files failed");
            ApiError::internal()
        })?;
    if let Ok(mut cache) = state.manifests.0.lock() {
        cache.insert(model.to_string(), (stamp, manifest.clone()));
    }
    Ok(manifest)
}

/// `GET /internal/models/{model}/manifest`.
pub async fn manifest(
    State(state): State<SharedState>,
    UrlPath(model): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers, &model).await {
        return e.into_response();
    }
    match manifest_for(&state, &model).await {
        Ok(m) => Json(m).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses a single `bytes=` range against a file of `size` bytes: `(start, end_inclusive)`.
pub fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        size.checked_sub(1)?
    } else {
        b.parse().ok()?
    };
    let end = end.min(size.checked_sub(1)?);
    (start <= end).then_some((start, end))
}

/// `GET /internal/models/{model}/files/{*path}`.
pub async fn file(
    State(state): State<SharedState>,
    UrlPath((model, path)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers, &model).await {
        return e.into_response();
    }
    let manifest = match manifest_for(&state, &model).await {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    // Only paths of the manifest are served: no `..`, no absolute paths, no surprises.
    let Some(entry) = manifest.files.iter().find(|f| f.path == path) else {
        return ApiError::not_found(format!("`{path}` is not a file of model `{model}`"))
            .into_response();
    };
    let Some(root) = model_dir(&state, &model) else {
        return ApiError::internal().into_response();
    };
    let mut f = match tokio::fs::File::open(file_path(&root, &entry.path)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "opening a model file failed");
            return ApiError::internal().into_response();
        }
    };
    let size = entry.size;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match parse_range(r, size) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
            None => {
                let mut resp = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "invalid_request_error",
                    format!("range `{r}` not satisfiable for {size} bytes"),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    if start > 0 && f.seek(SeekFrom::Start(start)).await.is_err() {
        return ApiError::internal().into_response();
    }
    let stream = tokio_util::io::ReaderStream::new(f.take(len));
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", entry.sha256)) {
        h.insert(header::ETAG, v);
    }
    resp
}
