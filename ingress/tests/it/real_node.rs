//! End to end with the real `dayshift-node` binary: an in-process ingress gets its
//! certificate from Pebble (ACME TLS-ALPN-01) and serves two pools from its model mirror
//! (the tiny test chat model and MiniLM); two `dayshift-node` processes, each with a
//! one-time join token from `AppState::create_node`, fetch their model from the mirror
//! over HTTPS (trusting Pebble's root), load it, and register; the ingress pins each
//! node's self-signed certificate. Then the official `openai` Python client, trusting
//! only Pebble's root, does chat, streaming with usage, completions, embeddings and
//! models through the ingress; usage rows name the real nodes.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::pebble::{AcmeGateway, Proc, acme_gateway, minilm_dir, node_bin};
use dayshift::server::Tuning;

const CHAT_MODEL: &str = "tiny-chat";
const EMBED_MODEL: &str = "minilm";

/// The Python side: the official client against the ingress over HTTPS.
const CLIENT_PY: &str = r#"
import math, os, sys
import openai

ca = os.environ["DAYSHIFT_CA"]
client = openai.OpenAI(
    base_url=os.environ["DAYSHIFT_BASE_URL"],
    api_key=os.environ["DAYSHIFT_KEY"],
    http_client=openai.DefaultHttpxClient(verify=ca),
    max_retries=0,
    timeout=120,
)
msgs = [{"role": "user", "content": "What is the capital of France?"}]

chat = client.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=8, temperature=0)
text = chat.choices[0].message.content
assert isinstance(text, str) and text, chat
assert chat.usage.prompt_tokens > 0 and 0 < chat.usage.completion_tokens <= 8, chat.usage
print("chat ok", repr(text), chat.usage)

parts, usage, chunks = [], None, 0
stream = client.chat.completions.create(
    model="tiny-chat", messages=msgs, max_tokens=8, temperature=0,
    stream=True, stream_options={"include_usage": True},
)
for chunk in stream:
    chunks += 1
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
    if chunk.usage:
        usage = chunk.usage
assert chunks >= 2, chunks
assert "".join(parts) == text, (parts, text)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage
assert usage.prompt_tokens == chat.usage.prompt_tokens, usage
print("stream ok", chunks, "chunks", usage)

comp = client.completions.create(model="tiny-chat", prompt="The capital of France is", max_tokens=5, temperature=0)
assert isinstance(comp.choices[0].text, str) and comp.choices[0].text, comp
assert comp.usage.prompt_tokens > 0 and 0 < comp.usage.completion_tokens <= 5, comp.usage
print("completions ok", repr(comp.choices[0].text))

emb = client.embeddings.create(model="minilm", input=["A cat sits on the mat.", "Stock markets fell today."])
assert len(emb.data) == 2, emb
a, b = emb.data[0].embedding, emb.data[1].embedding
assert len(a) == 384 and len(b) == 384, (len(a), len(b))
na = math.sqrt(sum(x * x for x in a))
assert na > 0, na
assert a != b
assert emb.usage.prompt_tokens > 0, emb.usage
print("embeddings ok", len(a), "dims, norm", round(na, 4))

models = {m.id: m for m in client.models.list()}
assert sorted(models) == ["minilm", "tiny-chat"], models
for m in models.values():
    assert (m.model_extra or {}).get("available") is True, m
print("models ok")

try:
    openai.OpenAI(
        base_url=os.environ["DAYSHIFT_BASE_URL"], api_key="dsk-wrong",
        http_client=openai.DefaultHttpxClient(verify=ca), max_retries=0,
    ).models.list()
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401
print("auth ok")
print("ALL OK")
"#;

/// A `dayshift-node serve` process with its log collected.
struct NodeProc {
    proc: Proc,
    log: Arc<Mutex<Vec<String>>>,
}

impl NodeProc {
    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// Writes a node config for `id` serving `model` from the ingress's mirror and starts it.
fn start_node(dir: &Path, gw: &AcmeGateway, id: &str, token: &str, model: &str) -> NodeProc {
    let node_dir = dir.join(id);
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let cfg = format!(
        r#"node_id = "{id}"
ingress_url = "{base}"
join_token = "{token}"
ingress_ca_file = "{ca}"
listen = "127.0.0.1:0"
cache_dir = "{cache}"
drain_grace_secs = 2
[tls]
mode = "self_signed"
[engine]
device = "cpu"
max_running_sequences = 4
[[models]]
name = "{model}"
source = {{ type = "mirror" }}
"#,
        base = gw.base,
        ca = gw.pebble.root_path.display(),
        cache = node_dir.join("cache").display(),
    );
    let cfg_path = node_dir.join("node.toml");
    std::fs::write(&cfg_path, cfg).expect("node config");
    let mut child = Command::new(node_bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dayshift-node serve");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let tag = id.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{tag}] {line}");
            if let Ok(mut l) = l2.lock() {
                l.push(line);
            }
        }
    });
    NodeProc {
        proc: Proc(child),
        log,
    }
}

/// Waits until `pool` has a routable node (the node registered), 180 s at most.
async fn wait_registered(gw: &AcmeGateway, pool: &str, node: &mut NodeProc) {
    let started = Instant::now();
    loop {
        let p = gw.state().registry.pool(pool).expect("pool");
        if p.ready_count(Duration::from_secs(30)) > 0 {
            eprintln!("{pool}: node registered after {:?}", started.elapsed());
            return;
        }
        if let Ok(Some(status)) = node.proc.0.try_wait() {
            panic!(
                "dayshift-node of pool {pool} exited ({status}):\n{}",
                node.log_text()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the node of pool {pool} did not register in 180 s:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn make_tiny_model(dir: &Path) {
    let st = Command::new(node_bin())
        .arg("make-test-model")
        .arg(dir)
        .status()
        .expect("dayshift-node make-test-model");
    assert!(st.success(), "dayshift-node make-test-model failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_through_acme_ingress_to_real_dayshift_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tiny = dir.path().join("tiny-model");
    make_tiny_model(&tiny);
    let minilm = minilm_dir();
    // The pools' model folders are what the mirror serves to the nodes.
    let pools = format!(
        r#"[pools.chat]
model = "{CHAT_MODEL}"
model_source = "{tiny}"
queue_timeout = "5s"
[pools.embed]
model = "{EMBED_MODEL}"
model_source = "{minilm}"
queue_timeout = "5s"
"#,
        tiny = tiny.display(),
        minilm = minilm.display(),
    );
    let tuning = Tuning {
        heartbeat_interval: Duration::from_secs(1),
        stale_after: Duration::from_secs(10),
        usage_flush: Duration::from_millis(50),
        ..Tuning::default()
    };
    // `localhost`: the nodes resolve it with the system resolver; Pebble's challenge
    // server resolves every name to 127.0.0.1.
    let gw = acme_gateway(dir.path(), "localhost", &pools, tuning).await;

    // The nodes' rows with one-time join tokens, then the real processes.
    let chat_token = gw
        .state()
        .create_node("chat-1", "chat")
        .await
        .expect("create chat node");
    let embed_token = gw
        .state()
        .create_node("embed-1", "embed")
        .await
        .expect("create embed node");
    let mut chat = start_node(dir.path(), &gw, "chat-1", chat_token.expose(), CHAT_MODEL);
    let mut embed = start_node(
        dir.path(),
        &gw,
        "embed-1",
        embed_token.expose(),
        EMBED_MODEL,
    );
    wait_registered(&gw, "chat", &mut chat).await;
    wait_registered(&gw, "embed", &mut embed).await;

    // Both registered over HTTPS with a pinned self-signed certificate, and the mirror
    // gave them their files (the node's cache holds them).
    for (id, pool) in [("chat-1", "chat"), ("embed-1", "embed")] {
        let node = gw
            .state()
            .registry
            .pool(pool)
            .and_then(|p| p.nodes().into_iter().find(|n| n.id == id))
            .expect("registered node");
        assert!(
            node.api_url.starts_with("https://127.0.0.1:"),
            "{id}: {}",
            node.api_url
        );
        let fp = node.fingerprint.clone().expect("pinned fingerprint");
        assert_eq!(fp.len(), 64, "{id}: {fp}");
        // The node's own port answers only the ingress's credential.
        let direct = reqwest12::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let url = format!("{}/v1/models", node.api_url);
        let r = direct.get(&url).send().await.expect("direct request");
        assert_eq!(
            r.status(),
            401,
            "{id}: the node answered without a credential"
        );
        let r = direct
            .get(&url)
            .bearer_auth(node.api_token.expose())
            .send()
            .await
            .expect("direct request");
        assert_eq!(
            r.status(),
            200,
            "{id}: the node refused the ingress's credential"
        );
        let cached = dir.path().join(id).join("cache");
        assert!(
            walk_count(&cached) >= 3,
            "{id}: no model files fetched into {}",
            cached.display()
        );
    }
    assert!(
        chat.log_text().contains("registered with the ingress"),
        "{}",
        chat.log_text()
    );

    let key = common::api_key_state(gw.state()).await;
    let script = dir.path().join("openai_real_node.py");
    std::fs::write(&script, CLIENT_PY).expect("script");
    let py = tokio::task::spawn_blocking({
        let script = script.clone();
        let base = format!("{}/v1", gw.base);
        let ca = gw.pebble.root_path.clone();
        let key = key.clone();
        move || {
            Command::new("python3")
                .arg(&script)
                .env("DAYSHIFT_BASE_URL", base)
                .env("DAYSHIFT_CA", ca)
                .env("DAYSHIFT_KEY", key)
                .output()
                .expect("python3 (run scripts/deps/python-ingress.sh)")
        }
    })
    .await
    .expect("python task");
    let py_out = String::from_utf8_lossy(&py.stdout).to_string();
    eprintln!("{py_out}");
    assert!(
        py.status.success() && py_out.contains("ALL OK"),
        "openai client failed:\n{py_out}\n{}\n--- chat node ---\n{}",
        String::from_utf8_lossy(&py.stderr),
        chat.log_text()
    );

    // Usage rows name the real nodes.
    let state = gw.state().clone();
    gw.stop().await;
    let rows = state.store.usage_rows(0, i64::MAX).await.expect("usage");
    let ok: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert!(
        ok.iter()
            .filter(|r| r.node_id.as_deref() == Some("chat-1"))
            .count()
            >= 3,
        "{rows:?}"
    );
    assert!(
        ok.iter()
            .any(|r| r.node_id.as_deref() == Some("embed-1") && r.prompt_tokens > 0),
        "{rows:?}"
    );
    assert!(
        ok.iter()
            .any(|r| r.node_id.as_deref() == Some("chat-1") && r.completion_tokens > 0),
        "{rows:?}"
    );
    drop(chat);
    drop(embed);
}

fn walk_count(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_count(&p) } else { 1 }
        })
        .sum()
}
