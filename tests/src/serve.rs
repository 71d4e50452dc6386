//! `dayshift serve` as a real process against the fake Hetzner API, for end-to-end and
//! chaos tests: writes its `dayshift.toml` (test hosts reached over SSH, nodes started
//! with a shell command), creates API keys through the CLI, starts and kills it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use dayshift_provisioning::SshKeyPair;

use crate::processes::{dayshift_bin, node_bin, node_bin_stripped};
use crate::test_host;

/// One pool of the config.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Pool name.
    pub name: String,
    /// Model name (a folder under `<state>/models/` for the mirror).
    pub model: String,
    /// Locations at the fake (`fsn1`, `nbg1`, `hel1`, …), in order of preference.
    pub locations: Vec<String>,
    /// Assumed cold start, seconds.
    pub cold_start_secs: u32,
    /// Drain timeout, seconds.
    pub drain_timeout_secs: u32,
}

/// How the ingress serves.
#[derive(Debug, Clone)]
pub enum TlsSpec {
    /// Plain HTTP.
    Off,
    /// A certificate from an ACME server (Pebble) for `domain`.
    Acme {
        /// The certificate's name (resolved to 127.0.0.1 by the nodes through
        /// `gateway.node_address`).
        domain: String,
        /// ACME directory URL.
        directory: String,
        /// CA of the directory's own HTTPS certificate.
        directory_ca: PathBuf,
        /// The root that issues the ingress's certificate (nodes trust it).
        root: PathBuf,
    },
}

/// Everything `dayshift.toml` needs.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    /// Folder of the config (state in `state/`).
    pub dir: PathBuf,
    /// Gateway port on 127.0.0.1.
    pub port: u16,
    /// The fake's API URL.
    pub endpoint: String,
    /// The test hosts' SSH port.
    pub ssh_port: u16,
    /// TLS.
    pub tls: TlsSpec,
    /// Pools.
    pub pools: Vec<PoolSpec>,
    /// Monthly budget, if any.
    pub budget: Option<String>,
    /// `postgres://…` to share a store between replicas; default SQLite in `state/`.
    pub database_url: Option<String>,
    /// The gateway port nodes register with (another replica's); default `port`.
    pub public_port: Option<u16>,
}

/// The environment variable holding the fake's token.
pub const TOKEN_ENV: &str = "E2E_HCLOUD_TOKEN";

impl ServeSpec {
    /// Writes the operator key and `dayshift.toml`; returns the config's path.
    pub fn write(&self) -> PathBuf {
        let key_path = self.dir.join("operator_key");
        if !key_path.is_file() {
            let operator = SshKeyPair::generate("operator").expect("operator key");
            std::fs::write(&key_path, operator.private_openssh().expect("pem")).expect("key");
            std::fs::set_permissions(
                &key_path,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod");
        }
        let mut t = format!(
            r#"cluster = "e2e"
state_dir = "state"
schedule = "schedule.toml"
{database}

[provider]
kind = "hetzner"
endpoint = "{endpoint}"
token_env = "{TOKEN_ENV}"
ssh_key = "operator_key"
node_binary = "{node}"

[provider.bootstrap]
ssh_port = {ssh_port}
ssh_user = "{ssh_user}"
install_dir = "{install}/{{node}}"
start_command = "nohup {{binary}} serve --config {{config}} >{{dir}}/node.log 2>&1 </dev/null &"
node_port = 8443

[provider.server_types.cx22]
hourly = "0.0095"
monthly = "5.83"
"#,
            database = self
                .database_url
                .as_ref()
                .map(|u| format!("database_url = \"{u}\""))
                .unwrap_or_default(),
            endpoint = self.endpoint,
            node = node_bin_stripped().display(),
            ssh_port = self.ssh_port,
            ssh_user = test_host::ssh_user(),
            install = self.dir.join("hosts").display(),
        );
        for p in &self.pools {
            t.push_str(&format!(
                r#"
[pools.{name}]
model = "{model}"
model_source = "mirror"
server_types = ["cx22"]
locations = [{locations}]
max_nodes = 1
cold_start = "{cold}s"
queue_timeout = "30s"
drain_timeout = "{drain}s"
"#,
                name = p.name,
                model = p.model,
                locations = p
                    .locations
                    .iter()
                    .map(|l| format!("\"{l}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                cold = p.cold_start_secs,
                drain = p.drain_timeout_secs,
            ));
        }
        match &self.tls {
            TlsSpec::Off => t.push_str(&format!(
                "\n[gateway]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{public}\"\n\n[tls]\nmode = \"off\"\n",
                port = self.port,
                public = self.public_port.unwrap_or(self.port),
            )),
            TlsSpec::Acme {
                domain,
                directory,
                directory_ca,
                root,
            } => t.push_str(&format!(
                r#"
[gateway]
listen = "127.0.0.1:{port}"
public_url = "https://{domain}:{port}"
node_address = "127.0.0.1:{port}"
node_ca = "{root}"

[tls]
mode = "acme"
domains = ["{domain}"]
directory = "{directory}"
directory_ca = "{ca}"
"#,
                port = self.port,
                root = root.display(),
                ca = directory_ca.display(),
            )),
        }
        if let Some(b) = &self.budget {
            t.push_str(&format!("\n[budget]\nmonthly = \"{b}\"\n"));
        }
        let path = self.dir.join("dayshift.toml");
        std::fs::write(&path, t).expect("dayshift.toml");
        path
    }

    /// The store's SQLite path.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("state/dayshift.db")
    }

    /// Writes the tiny test Llama as model `name` into the ingress's mirror folder.
    pub fn mirror_tiny_model(&self, name: &str) {
        let dir = self.dir.join("state/models").join(name);
        let st = Command::new(node_bin())
            .arg("make-test-model")
            .arg(&dir)
            .status()
            .expect("dayshift-node make-test-model");
        assert!(st.success());
    }
}

/// Creates an API key through the CLI; returns its secret.
pub fn create_key(config: &Path, name: &str) -> String {
    let out = Command::new(dayshift_bin())
        .args(["keys", "create", "--name", name, "--json", "--config"])
        .arg(config)
        .output()
        .expect("dayshift keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["secret"].as_str().expect("secret").to_string()
}

/// A running `dayshift serve`, killed on drop.
pub struct ServeProc {
    /// The process.
    pub child: Child,
    /// Its log (appended across restarts).
    pub log: PathBuf,
}

impl ServeProc {
    /// Starts `dayshift serve` with a short scheduler tick; output appended to `log`.
    pub fn start(config: &Path, log: &Path, tick_ms: u64) -> ServeProc {
        Self::start_with(config, log, Some(tick_ms))
    }

    /// Starts `dayshift serve` with the scheduler's production timing (no
    /// `DAYSHIFT_TICK_MS`: the loop wakes when its last tick asked).
    pub fn start_production_timing(config: &Path, log: &Path) -> ServeProc {
        Self::start_with(config, log, None)
    }

    fn start_with(config: &Path, log: &Path, tick_ms: Option<u64>) -> ServeProc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("serve log");
        let mut cmd = Command::new(dayshift_bin());
        cmd.args(["serve", "--config"])
            .arg(config)
            .env(TOKEN_ENV, "e2e-token")
            .env_remove("DAYSHIFT_TICK_MS");
        if let Some(ms) = tick_ms {
            cmd.env("DAYSHIFT_TICK_MS", ms.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("dayshift serve");
        ServeProc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Runs one SQL query against a SQLite file with Python's sqlite3 (rows as `|`-joined
/// text): the tests read the ingress's store without linking its crate.
pub fn sqlite_rows(db: &Path, sql: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             [print('|'.join(str(v) for v in r)) for r in c.execute(sys.argv[2])]",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Test hosts still up at the fake (servers whose sshd runs).
pub fn live_hosts(fake: &crate::FakeHcloud) -> usize {
    fake.hosts().map(|h| h.describe().len()).unwrap_or(0)
}

/// The fake's `GET /v1/servers` answer, as a client sees it.
pub async fn listed_servers(fake: &crate::FakeHcloud) -> serde_json::Value {
    reqwest12::Client::new()
        .get(format!("{}/servers", fake.endpoint()))
        .bearer_auth("e2e-token")
        .send()
        .await
        .expect("GET /v1/servers")
        .json()
        .await
        .expect("servers JSON")
}
