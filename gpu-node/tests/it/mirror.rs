//! Model files from the ingress's mirror (a stand-in in the test): manifest, download
//! resumed with `Range` from a partial file, sha256 checked; a corrupt file is refused.

use crate::common;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dayshift_config::protocol::{MODEL_MIRROR_PATH, ManifestFile, ModelManifest};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

struct Mirror {
    dir: PathBuf,
    corrupt: bool,
    ranges: Mutex<Vec<String>>,
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

async fn manifest(State(m): State<Arc<Mirror>>, Path(model): Path<String>) -> Response {
    let mut files = Vec::new();
    for e in std::fs::read_dir(&m.dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        files.push(ManifestFile {
            path: p.file_name().unwrap().to_string_lossy().into(),
            size: bytes.len() as u64,
            sha256: hex(&bytes),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    axum::Json(ModelManifest { model, files }).into_response()
}

async fn file(
    State(m): State<Arc<Mirror>>,
    Path((_model, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let mut bytes = std::fs::read(m.dir.join(&name)).unwrap();
    if m.corrupt && name == "config.json" {
        bytes[0] ^= 1;
    }
    if let Some(r) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        m.ranges.lock().unwrap().push(format!("{name} {r}"));
        let from: usize = r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        return (StatusCode::PARTIAL_CONTENT, bytes[from..].to_vec()).into_response();
    }
    bytes.into_response()
}

fn start_mirror(m: Arc<Mirror>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let app = axum::Router::new()
                    .route(
                        &format!("{MODEL_MIRROR_PATH}/{{model}}/manifest"),
                        get(manifest),
                    )
                    .route(
                        &format!("{MODEL_MIRROR_PATH}/{{model}}/files/{{name}}"),
                        get(file),
                    )
                    .with_state(m);
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app).await.unwrap();
            });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn cfg(ingress: &str, cache: &std::path::Path) -> String {
    format!(
        "node_id = \"m1\"\ningress_url = \"{ingress}\"\njoin_token = \"t\"\nlisten = \"127.0.0.1:0\"\ncache_dir = {:?}\n[tls]\nmode = \"off\"\n[engine]\ndevice = \"cpu\"\n[[models]]\nname = \"tiny\"\nsource = {{ type = \"mirror\" }}\n",
        cache.display().to_string()
    )
}

#[test]
fn fetches_resumes_and_verifies_model_files() {
    let tiny = common::tiny_model();
    let m = Arc::new(Mirror {
        dir: tiny.path().to_path_buf(),
        corrupt: false,
        ranges: Mutex::default(),
    });
    let ingress = start_mirror(m.clone());
    let cache = tempfile::tempdir().unwrap();
    // A partial download left by an earlier attempt.
    std::fs::create_dir_all(cache.path().join("tiny")).unwrap();
    let weights = std::fs::read(tiny.path().join("model.safetensors")).unwrap();
    std::fs::write(
        cache.path().join("tiny/model.safetensors.part"),
        &weights[..1000],
    )
    .unwrap();
    let node = common::Node::start(&cfg(&ingress, cache.path()));
    // Ready means the model loaded (the API itself answers only the ingress, which this
    // stand-in mirror does not play).
    let health: serde_json::Value = common::client()
        .get(node.url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ready");
    let r = common::client().get(node.url("/v1/models")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        std::fs::read(cache.path().join("tiny/model.safetensors")).unwrap(),
        weights
    );
    assert_eq!(
        *m.ranges.lock().unwrap(),
        vec!["model.safetensors bytes=1000-".to_string()]
    );
}

#[test]
fn refuses_a_file_whose_sha256_differs() {
    let tiny = common::tiny_model();
    let m = Arc::new(Mirror {
        dir: tiny.path().to_path_buf(),
        corrupt: true,
        ranges: Mutex::default(),
    });
    let ingress = start_mirror(m);
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, cfg(&ingress, dir.path())).unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json from the mirror has sha256"),
        "{err}"
    );
}

async fn hub_info() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"siblings": [
        {"rfilename": "config.json"}, {"rfilename": "generation_config.json"},
        {"rfilename": "tokenizer.json"}, {"rfilename": "tokenizer_config.json"},
        {"rfilename": "model.safetensors", "lfs": {"sha256": HUB_SHA.lock().unwrap().clone(), "size": 0}},
        {"rfilename": "README.md"}, {"rfilename": "onnx/model.onnx"}
    ]}))
}

static HUB_SHA: Mutex<String> = Mutex::new(String::new());
static HUB_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

async fn hub_file(Path((_o, _r, _rev, name)): Path<(String, String, String, String)>) -> Response {
    let dir = HUB_DIR.lock().unwrap().clone().unwrap();
    match std::fs::read(dir.join(&name)) {
        Ok(b) => b.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

#[test]
fn hf_source_downloads_from_the_hub_endpoint() {
    let tiny = common::tiny_model();
    let w = std::fs::read(tiny.path().join("model.safetensors")).unwrap();
    *HUB_SHA.lock().unwrap() = hex(&w);
    *HUB_DIR.lock().unwrap() = Some(tiny.path().to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let app = axum::Router::new()
                    .route("/api/models/{o}/{r}/revision/{rev}", get(hub_info))
                    .route("/{o}/{r}/resolve/{rev}/{name}", get(hub_file));
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app).await.unwrap();
            });
    });
    let hub = format!("http://{}", rx.recv().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "node_id = \"h\"\nlisten = \"127.0.0.1:0\"\ncache_dir = {:?}\n[tls]\nmode = \"off\"\n[engine]\ndevice = \"cpu\"\n[[models]]\nname = \"tiny\"\nsource = {{ type = \"hf\", repo = \"acme/tiny\" }}\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    // Start, wait until ready (the files are then in the cache), stop.
    let mut child = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .env("HF_ENDPOINT", &hub)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cached = dir.path().join("hf/acme--tiny/main/model.safetensors");
    let t0 = std::time::Instant::now();
    while !cached.is_file() {
        assert!(t0.elapsed().as_secs() < 60, "hub download did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(std::fs::read(cached).unwrap(), w);
    assert!(!dir.path().join("hf/acme--tiny/main/README.md").exists());
}

#[test]
fn serves_a_single_gguf_file_from_the_mirror() {
    let tiny = common::tiny_model();
    let only = tempfile::tempdir().unwrap();
    dayshift_node::model::quantize::write_from_dir(
        tiny.path(),
        &only.path().join("tiny.Q8_0.gguf"),
        candle_core::quantized::GgmlDType::Q8_0,
    )
    .unwrap();
    let m = Arc::new(Mirror {
        dir: only.path().to_path_buf(),
        corrupt: false,
        ranges: Mutex::default(),
    });
    let ingress = start_mirror(m);
    let cache = tempfile::tempdir().unwrap();
    let node = common::Node::start(&cfg(&ingress, cache.path()));
    assert!(cache.path().join("tiny/tiny.Q8_0.gguf").is_file());
    // The GGUF file loaded: the node is ready (its API answers only the ingress, which
    // this stand-in mirror does not play).
    let health: serde_json::Value = common::client()
        .get(node.url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ready");
}
