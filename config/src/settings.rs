//! The main config file, `dayshift.toml`: cluster, state, store, provider with server
//! types and prices, pools, gateway, TLS and budget.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;

use crate::billing::{BillingRule, Price};
use crate::diag::{Diag, Problems, closest};
use crate::firewall::{Cidr, FirewallSetting};
use crate::schedule::NodeRange;
use crate::toml_read::{Node, Span, Table, parse_document};

const TOP_KEYS: &[&str] = &[
    "cluster",
    "state_dir",
    "database_url",
    "schedule",
    "provider",
    "pools",
    "gateway",
    "tls",
    "budget",
];
const PROVIDER_KEYS: &[&str] = &[
    "kind",
    "endpoint",
    "token_env",
    "ssh_key",
    "ssh_key_name",
    "firewall",
    "firewall_sources",
    "node_binary",
    "node_binary_cuda",
    "bootstrap",
    "billing",
    "server_types",
];
const BILLING_KEYS: &[&str] = &["unit", "minimum", "monthly_cap"];
const BOOTSTRAP_KEYS: &[&str] = &[
    "ssh_port",
    "ssh_user",
    "install_dir",
    "start_command",
    "node_port",
];
const SERVER_TYPE_KEYS: &[&str] = &["hourly", "monthly", "gpu", "gpu_memory", "node_binary"];
const POOL_KEYS: &[&str] = &[
    "model",
    "model_source",
    "server_types",
    "locations",
    "image",
    "max_nodes",
    "cold_start",
    "queue_timeout",
    "drain_timeout",
    "wake_on_demand",
    "billing_aware_stop",
    "min_nodes",
    "target_in_flight",
    "scale_up_after",
    "scale_down_after",
    "min_wake",
    "quantize",
    "slots",
    "context_tokens",
    "prefix_cache",
];
const GATEWAY_KEYS: &[&str] = &[
    "listen",
    "http_listen",
    "public_url",
    "node_ca",
    "node_address",
    "max_body_bytes",
    "header_read_timeout",
    "body_read_timeout",
    "idle_timeout",
    "max_connections_per_address",
];
const TLS_KEYS: &[&str] = &["mode", "domains", "contact", "directory", "directory_ca"];
const BUDGET_KEYS: &[&str] = &["monthly"];

/// Which provider rents the GPU servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `dayshift-node` processes on this machine (the embedded default).
    Local,
    /// Hetzner Cloud.
    Hetzner,
    /// Scaleway Instances.
    Scaleway,
}

impl ProviderKind {
    /// Every provider kind.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Local,
        ProviderKind::Hetzner,
        ProviderKind::Scaleway,
    ];

    /// The name in `dayshift.toml` (`kind = "…"`), in the ledger's rows and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Hetzner => "hetzner",
            ProviderKind::Scaleway => "scaleway",
        }
    }

    /// The provider's billing rule before any `[provider.billing]` the operator writes.
    pub fn billing_rule(self) -> BillingRule {
        match self {
            ProviderKind::Hetzner => BillingRule::HETZNER,
            ProviderKind::Scaleway => BillingRule::SCALEWAY,
            ProviderKind::Local => BillingRule::LOCAL,
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = ();

    /// The kind named `s` (exactly as [`ProviderKind::as_str`] writes it).
    fn from_str(s: &str) -> Result<Self, ()> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server type of the provider with its prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerType {
    /// Prices in EUR.
    pub price: Price,
    /// GPU description, for people (e.g. "L4 24 GB"). A type with a GPU gets the CUDA
    /// node binary and `device = "cuda"` in its node config.
    pub gpu: Option<String>,
    /// Memory of one of its GPUs in bytes (`gpu_memory = "24 GiB"`); default: the
    /// figure of [`crate::pool_fit::KNOWN_GPU_TYPES`] for the type's name.
    pub gpu_memory: Option<u64>,
    /// `dayshift-node` binary for servers of this type (overrides `provider.node_binary`
    /// and `provider.node_binary_cuda`).
    pub node_binary: Option<PathBuf>,
}

/// `[provider.bootstrap]`: how a created server is set up over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// SSH port of created servers.
    pub ssh_port: u16,
    /// User the bootstrap logs in as.
    pub ssh_user: String,
    /// Folder on the server for the node binary and its config.
    pub install_dir: String,
    /// Shell command that starts the node (`{binary}`, `{config}`, `{dir}` replaced);
    /// `None`: a systemd unit `dayshift-node`.
    pub start_command: Option<String>,
    /// Port the node's API listens on.
    pub node_port: u16,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            ssh_port: 22,
            ssh_user: "root".into(),
            install_dir: "/opt/dayshift".into(),
            start_command: None,
            node_port: 8443,
        }
    }
}

/// `[provider]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Which provider.
    pub kind: ProviderKind,
    /// API endpoint; `None` means the provider's public one.
    pub endpoint: Option<String>,
    /// Name of the environment variable that holds the API token (never the token itself).
    pub token_env: String,
    /// Operator's private SSH key file, for bootstrap.
    pub ssh_key: Option<PathBuf>,
    /// Name the operator's public key is registered under at the provider (Hetzner), when
    /// `dayshift serve` finds it is not registered yet; default `dayshift-CLUSTER-operator`.
    pub ssh_key_name: Option<String>,
    /// Provider firewall to attach to created servers: one the operator made (by name),
    /// or `"auto"`, one dayshift keeps; `None`: servers are not fenced by the provider.
    pub firewall: Option<FirewallSetting>,
    /// With `firewall = "auto"`: the networks let in (the ingress's addresses); `None`:
    /// derived, see [`Config::firewall_sources`].
    pub firewall_sources: Option<Vec<Cidr>>,
    /// `dayshift-node` binary to run or upload; default: next to `dayshift`.
    pub node_binary: Option<PathBuf>,
    /// The CUDA build of `dayshift-node`, for server types with `gpu` (see
    /// [`ProviderConfig::node_binary_for`]).
    pub node_binary_cuda: Option<PathBuf>,
    /// How created servers are set up over SSH (`[provider.bootstrap]`).
    pub bootstrap: BootstrapConfig,
    /// The provider's billing rule.
    pub billing: BillingRule,
    /// Server types by name.
    pub server_types: BTreeMap<String, ServerType>,
}

/// Which `dayshift-node` build a server type gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBinaryChoice {
    /// The configured binary; `None`: the default one, next to `dayshift`.
    pub path: Option<PathBuf>,
    /// The node config's `engine.device`: `cuda` for a type with a GPU, else `cpu`.
    pub device: &'static str,
}

impl ProviderConfig {
    /// Whether `server_type` is declared with a `gpu`.
    pub fn is_gpu_type(&self, server_type: &str) -> bool {
        self.server_types
            .get(server_type)
            .is_some_and(|t| t.gpu.is_some())
    }

    /// The node binary and device for a server of `server_type`: the type's own
    /// `node_binary` first; for a GPU type `node_binary_cuda`, then `node_binary`; for
    /// a CPU type `node_binary`. A GPU type always runs with `device = "cuda"`, so a CPU
    /// build sent there by mistake reports a clear start failure instead of running
    /// slowly on the CPU.
    pub fn node_binary_for(&self, server_type: &str) -> NodeBinaryChoice {
        let own = self
            .server_types
            .get(server_type)
            .and_then(|t| t.node_binary.clone());
        if self.is_gpu_type(server_type) {
            NodeBinaryChoice {
                path: own
                    .or_else(|| self.node_binary_cuda.clone())
                    .or_else(|| self.node_binary.clone()),
                device: "cuda",
            }
        } else {
            NodeBinaryChoice {
                path: own.or_else(|| self.node_binary.clone()),
                device: "cpu",
            }
        }
    }
}

/// `[pools.NAME]`: a set of nodes that serve one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The `model` name clients ask for.
    pub model: String,
    /// Where nodes get the model: a local path, `mirror` (the ingress), or `hf:ORG/NAME`.
    pub model_source: String,
    /// Server types to try, in order (fallback on capacity errors).
    pub server_types: Vec<String>,
    /// Locations to try, in order.
    pub locations: Vec<String>,
    /// OS image for created servers.
    pub image: String,
    /// Never more nodes than this, whatever the schedule or demand says.
    pub max_nodes: u32,
    /// Assumed cold start (create → ready) before any boot was measured, in seconds; the
    /// pre-warm lead (p90 of measured boots) never exceeds three times it.
    pub cold_start_secs: u64,
    /// How long a request waits for a node that is on its way, in seconds.
    pub queue_timeout_secs: u64,
    /// How long in-flight requests may take to finish before a node is deleted, in seconds.
    pub drain_timeout_secs: u64,
    /// Keep a node until shortly before its paid hour ends.
    pub billing_aware_stop: bool,
    /// Elastic windows: when set, every window of the pool is a range from this floor
    /// (at most the window's count) to the window's count; `0` lets the pool go to zero
    /// nodes inside a window when idle.
    pub min_nodes: Option<u32>,
    /// Requests in flight per node the pool aims for: above it (queued requests count)
    /// for `scale_up_after`, an elastic window adds nodes; below it for
    /// `scale_down_after`, it removes them.
    pub target_in_flight: u32,
    /// How long load must stay above the target before a node is added, in seconds.
    pub scale_up_after_secs: u64,
    /// How long load must stay below the target before a node is removed, in seconds.
    pub scale_down_after_secs: u64,
    /// A request outside the schedule's windows starts a node (within the budget)
    /// instead of getting 503.
    pub wake_on_demand: bool,
    /// A node woken by a request stays at least this long, in seconds (default: one
    /// paid unit of the provider's billing rule), then follows the idle rule.
    pub min_wake_secs: u64,
    /// The nodes quantize a safetensors model's linear layers at load to this GGUF type
    /// (one of [`crate::node::QUANTIZE_TYPES`]); written into each node's config.
    pub quantize: Option<String>,
    /// Sequences a node runs at once (its engine's `max_running_sequences`); default 32.
    pub slots: Option<u32>,
    /// Tokens (prompt + output) each slot holds: the node's KV cache is `slots` ×
    /// `context_tokens` (its `kv_cache_tokens`); default: sized from the memory left,
    /// at least one sequence of the model's full context.
    pub context_tokens: Option<u32>,
    /// The nodes reuse a cached prompt start between requests of one API key (their
    /// engine's `prefix_cache`), and the ingress sends a conversation to the node that
    /// holds its start; default true. `false` prefills every prompt whole and routes each
    /// request to the least-loaded node.
    pub prefix_cache: bool,
}

impl PoolConfig {
    /// The engine settings of the pool's nodes (`device` is the server type's, set by
    /// the launcher): `slots` and `slots` × `context_tokens` of KV cache, `prefix_cache`.
    pub fn node_engine(&self) -> crate::node::EngineConfig {
        let d = crate::node::EngineConfig::default();
        let slots = self.slots.unwrap_or(d.max_running_sequences);
        crate::node::EngineConfig {
            max_running_sequences: slots,
            kv_cache_tokens: self.context_tokens.map(|c| u64::from(slots) * u64::from(c)),
            prefix_cache: self.prefix_cache,
            ..d
        }
    }

    /// How the pool's node range follows from the schedule's.
    pub fn range_rule(&self) -> RangeRule {
        RangeRule {
            min_nodes: self.min_nodes,
            max_nodes: self.max_nodes,
            wake_on_demand: self.wake_on_demand,
        }
    }
}

/// The pool settings that turn the schedule's node range at an instant into the pool's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRule {
    /// The pool's floor inside windows (`min_nodes`), if set.
    pub min_nodes: Option<u32>,
    /// The pool's cap (`max_nodes`).
    pub max_nodes: u32,
    /// Outside windows a request may wake a node.
    pub wake_on_demand: bool,
}

impl RangeRule {
    /// A fixed pool: the schedule's count capped at `max_nodes`, nothing outside windows.
    pub fn fixed(max_nodes: u32) -> RangeRule {
        RangeRule {
            min_nodes: None,
            max_nodes,
            wake_on_demand: false,
        }
    }

    /// The pool's range where the schedule's is `window`: inside a window, the window's
    /// range with the pool's floor (`min_nodes`, at most the window's count) and cap
    /// (`max_nodes`); outside one, `0-max_nodes` with `wake_on_demand`, else `0-0`.
    pub fn range(&self, window: NodeRange) -> NodeRange {
        if window.max > 0 {
            let max = window.max.min(self.max_nodes);
            let min = self.min_nodes.unwrap_or(window.min).min(max);
            NodeRange { min, max }
        } else if self.wake_on_demand {
            NodeRange {
                min: 0,
                max: self.max_nodes,
            }
        } else {
            NodeRange::default()
        }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// HTTPS (or plain HTTP with `tls.mode = "off"`) listen address.
    pub listen: String,
    /// Plain-HTTP listener that redirects to HTTPS; `None` for none.
    pub http_listen: Option<String>,
    /// The URL users reach; nodes use it to register.
    pub public_url: Option<String>,
    /// PEM file of the CA nodes trust for the ingress's certificate (a private or test
    /// CA); with `tls.mode = "self-signed"` the self-signed certificate is used.
    pub node_ca: Option<PathBuf>,
    /// Address nodes connect to for `public_url`'s host instead of resolving it (before
    /// DNS is set up, or in tests), e.g. `203.0.113.5:443`.
    pub node_address: Option<String>,
    /// Largest accepted request body (every route; larger ones get `413`).
    pub max_body_bytes: u64,
    /// Seconds a connection has for its TLS handshake and then for its first request
    /// head, and a later HTTP/1 request for its head from its first byte (default 10).
    pub header_read_timeout_secs: u64,
    /// Seconds a request has for its whole body after its head (default 30); slower
    /// ones get `408` and the connection is closed.
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in progress (default 60).
    pub idle_timeout_secs: u64,
    /// Open connections allowed from one client IP address (default 256).
    pub max_connections_per_address: u64,
}

/// How the ingress gets its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// ACME (Let's Encrypt by default) with TLS-ALPN-01.
    Acme,
    /// A self-signed certificate made at start, for a quick try.
    SelfSigned,
    /// Plain HTTP, behind another proxy.
    Off,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Mode.
    pub mode: TlsMode,
    /// Domains for the certificate.
    pub domains: Vec<String>,
    /// ACME contacts, e.g. `mailto:ops@example.org`.
    pub contact: Vec<String>,
    /// ACME directory URL.
    pub directory: String,
    /// PEM file of a CA to trust for the ACME directory (test servers such as Pebble).
    pub directory_ca: Option<PathBuf>,
}

/// The validated `dayshift.toml`. Relative paths are resolved against its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Cluster name; labels every server this cluster creates.
    pub cluster: String,
    /// Where the store, certificates and node work folders live.
    pub state_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// The schedule file.
    pub schedule: Option<PathBuf>,
    /// The provider.
    pub provider: ProviderConfig,
    /// Pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// The gateway.
    pub gateway: GatewayConfig,
    /// TLS.
    pub tls: TlsConfig,
    /// Monthly budget cap in EUR.
    pub budget_monthly: Option<Decimal>,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Config {
    /// Parses `dayshift.toml` text; relative paths are taken against `base_dir`.
    pub fn parse(file: &str, src: &str, base_dir: &Path) -> Result<Config, Problems> {
        parse(file, src, base_dir)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let src = crate::read_source(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Absolute, without `..`: paths in the file become plain absolute paths (a
        // database URL with `../` in it is not opened by SQLite).
        let base = std::fs::canonicalize(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        })
        .unwrap_or_else(|_| base.to_path_buf());
        Config::parse(&path.display().to_string(), &src, &base)
    }

    /// Pool names, sorted.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools.keys().cloned().collect()
    }

    /// Each pool's `max_nodes`, by name: what a schedule is checked against
    /// ([`crate::Schedule::load_for_pools`]).
    pub fn pool_caps(&self) -> BTreeMap<String, u32> {
        self.pools
            .iter()
            .map(|(n, p)| (n.clone(), p.max_nodes))
            .collect()
    }

    /// The price of a pool's first server type.
    pub fn pool_price(&self, pool: &str) -> Option<Price> {
        let p = self.pools.get(pool)?;
        let t = p.server_types.first()?;
        self.provider.server_types.get(t).map(|s| s.price.clone())
    }
}

/// Parses a memory size: "24 GiB", "23034 MiB", "24 GB", "48GB" (binary units GiB/MiB,
/// decimal GB/MB).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "gib" => (1u64 << 30) as f64,
        "mib" => (1u64 << 20) as f64,
        "gb" => 1e9,
        "mb" => 1e6,
        _ => {
            return Err(format!(
                "\"{text}\" is not a memory size: write e.g. \"24 GiB\", \"23034 MiB\" or \"24 GB\""
            ));
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && n < 1e6 => Ok((n * mult) as u64),
        _ => Err(format!(
            "\"{text}\" is not a memory size: write e.g. \"24 GiB\", \"23034 MiB\" or \"24 GB\""
        )),
    }
}

/// Parses a duration: "90s", "5m", "1h30m", "2d", or an integer number of seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("expected a duration such as \"30s\", \"5m\" or \"1h\", found \"{text}\"");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

fn duration(d: &mut Diag<'_>, t: &Table<'_, '_>, key: &str, default: u64) -> u64 {
    let Some(n) = t.get(key) else {
        return default;
    };
    let text = match n.value {
        toml::de::DeValue::String(s) => s.to_string(),
        toml::de::DeValue::Integer(i) => i.as_str().to_string(),
        other => {
            d.push(
                n.span.clone(),
                t.field(key),
                format!(
                    "expected a duration such as \"5m\", found {}",
                    other.type_str()
                ),
            );
            return default;
        }
    };
    match parse_duration(&text) {
        Ok(v) => v,
        Err(e) => {
            d.push(n.span.clone(), t.field(key), e);
            default
        }
    }
}

fn path_of(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse(file: &str, src: &str, base: &Path) -> Result<Config, Problems> {
    let mut d = Diag::new(file, src);
    let Some(doc) = parse_document(&mut d, src) else {
        return Err(d.into_problems());
    };
    let root = Table::root(&doc);
    root.check_keys(&mut d, TOP_KEYS);

    let cluster = match root.string(&mut d, "cluster", true, "a cluster name such as \"office\"") {
        Some((name, span)) if !name_ok(&name) => {
            d.push(
                span,
                "cluster",
                format!("\"{name}\" is not a valid cluster name: use 1-63 lowercase letters, digits, '-' or '_' (it becomes a server label)"),
            );
            String::new()
        }
        Some((name, _)) => name,
        None => String::new(),
    };
    let state_dir = root
        .string(&mut d, "state_dir", false, "a folder path")
        .map(|(s, _)| path_of(base, &s))
        .unwrap_or_else(|| base.join("state"));
    let database_url = match root.string(&mut d, "database_url", false, "a database URL") {
        Some((url, span)) => {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                d.push(
                    span,
                    "database_url",
                    format!("expected a URL starting with sqlite: or postgres://, found \"{url}\""),
                );
            }
            url
        }
        None => format!("sqlite://{}", state_dir.join("dayshift.db").display()),
    };
    let schedule = root
        .string(&mut d, "schedule", false, "the schedule file's path")
        .map(|(s, _)| path_of(base, &s));

    let (provider, firewall_auto) = parse_provider(&mut d, &root, base);
    let pools = parse_pools(&mut d, &root, &provider, base);
    let gateway = parse_gateway(&mut d, &root, base);
    if let Some(span) = firewall_auto
        && provider.firewall_sources.is_none()
        && gateway.node_address.is_none()
        && gateway.public_url.is_none()
    {
        d.push(
            span,
            "provider.firewall",
            "firewall = \"auto\" lets in only the ingress, and nothing here says its address: \
             set provider.firewall_sources (e.g. [\"203.0.113.7/32\"]), gateway.node_address \
             or gateway.public_url",
        );
    }
    let tls = parse_tls(&mut d, &root, base);
    let mut budget_monthly = None;
    if let Some(b) = root.table(&mut d, "budget") {
        b.check_keys(&mut d, BUDGET_KEYS);
        budget_monthly = b.money(&mut d, "monthly").map(|(v, _)| v);
    }

    if !d.is_empty() {
        return Err(d.into_problems());
    }
    Ok(Config {
        cluster,
        state_dir,
        database_url,
        schedule,
        provider,
        pools,
        gateway,
        tls,
        budget_monthly,
    })
}

fn parse_provider(
    d: &mut Diag<'_>,
    root: &Table<'_, '_>,
    base: &Path,
) -> (ProviderConfig, Option<Span>) {
    let mut cfg = ProviderConfig {
        kind: ProviderKind::Local,
        endpoint: None,
        token_env: String::new(),
        ssh_key: None,
        ssh_key_name: None,
        firewall: None,
        firewall_sources: None,
        node_binary: None,
        node_binary_cuda: None,
        bootstrap: BootstrapConfig::default(),
        billing: BillingRule::LOCAL,
        server_types: BTreeMap::new(),
    };
    let Some(p) = root.table(d, "provider") else {
        if root.get("provider").is_none() {
            root.missing(
                d,
                "provider",
                "a [provider] table with kind = \"local\", \"hetzner\" or \"scaleway\"",
            );
        }
        return (cfg, None);
    };
    p.check_keys(d, PROVIDER_KEYS);
    if let Some((kind, span)) = p.string(d, "kind", true, "\"local\", \"hetzner\" or \"scaleway\"")
    {
        cfg.kind = match kind.parse::<ProviderKind>() {
            Ok(k) => k,
            Err(()) => {
                let names = ProviderKind::ALL.map(ProviderKind::as_str);
                let hint = closest(&kind, &names)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                d.push(
                    span,
                    p.field("kind"),
                    format!("unknown provider \"{kind}\": expected \"local\", \"hetzner\" or \"scaleway\"{hint}"),
                );
                ProviderKind::Local
            }
        };
    }
    cfg.billing = cfg.kind.billing_rule();
    cfg.token_env = match cfg.kind {
        ProviderKind::Hetzner => "HCLOUD_TOKEN".into(),
        ProviderKind::Scaleway => "SCW_SECRET_KEY".into(),
        ProviderKind::Local => String::new(),
    };
    cfg.endpoint = p.string(d, "endpoint", false, "a URL").map(|(s, _)| s);
    if let Some((s, span)) = p.string(d, "token_env", false, "an environment variable name") {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            d.push(
                span,
                p.field("token_env"),
                "expected the NAME of an environment variable (letters, digits, '_'); never put the token itself in this file",
            );
        }
        cfg.token_env = s;
    }
    let cloud = cfg.kind != ProviderKind::Local;
    cfg.ssh_key = p
        .string(
            d,
            "ssh_key",
            cloud,
            "the operator's private SSH key file, e.g. \"/etc/dayshift/id_ed25519\" \
             (make one with `ssh-keygen -t ed25519 -N '' -f /etc/dayshift/id_ed25519`): \
             dayshift logs in to every rented server with it to start the node",
        )
        .map(|(s, _)| path_of(base, &s));
    cfg.ssh_key_name = p
        .string(d, "ssh_key_name", false, "an SSH key name")
        .map(|(s, _)| s);
    let firewall_span = parse_firewall(d, &p, &mut cfg);
    cfg.node_binary = p
        .string(d, "node_binary", false, "a path to dayshift-node")
        .map(|(s, _)| path_of(base, &s));
    cfg.node_binary_cuda = p
        .string(
            d,
            "node_binary_cuda",
            false,
            "a path to the CUDA build of dayshift-node",
        )
        .map(|(s, _)| path_of(base, &s));
    if let Some(b) = p.table(d, "bootstrap") {
        b.check_keys(d, BOOTSTRAP_KEYS);
        let bs = &mut cfg.bootstrap;
        if let Some((v, _)) = b.integer(d, "ssh_port", 1, 65535) {
            bs.ssh_port = v as u16;
        }
        if let Some((v, _)) = b.string(d, "ssh_user", false, "a user name") {
            bs.ssh_user = v;
        }
        if let Some((v, _)) = b.string(d, "install_dir", false, "an absolute folder path") {
            bs.install_dir = v;
        }
        bs.start_command = b
            .string(d, "start_command", false, "a shell command")
            .map(|(v, _)| v);
        if let Some((v, _)) = b.integer(d, "node_port", 1, 65535) {
            bs.node_port = v as u16;
        }
    }
    if let Some(b) = p.table(d, "billing") {
        b.check_keys(d, BILLING_KEYS);
        cfg.billing.unit_secs = duration(d, &b, "unit", cfg.billing.unit_secs).max(1);
        cfg.billing.minimum_secs = duration(d, &b, "minimum", cfg.billing.minimum_secs);
        if let Some((v, _)) = b.boolean(d, "monthly_cap") {
            cfg.billing.monthly_cap = v;
        }
    }
    if let Some(types) = p.table(d, "server_types") {
        for (name, _kspan, node) in types.entries() {
            let Some(t) = node.as_table(d, types.field(&name)) else {
                continue;
            };
            t.check_keys(d, SERVER_TYPE_KEYS);
            let hourly = match t.money(d, "hourly") {
                Some((v, _)) => v,
                None => {
                    if t.get("hourly").is_none() {
                        t.missing(d, "hourly", "the price per hour in EUR, e.g. \"0.49\"");
                    }
                    Decimal::ZERO
                }
            };
            let monthly = t.money(d, "monthly").map(|(v, _)| v);
            let gpu = t
                .string(d, "gpu", false, "a GPU description")
                .map(|(s, _)| s);
            let gpu_memory = t
                .string(
                    d,
                    "gpu_memory",
                    false,
                    "the memory of one GPU, e.g. \"24 GiB\"",
                )
                .and_then(|(s, span)| match parse_bytes(&s) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        d.push(span, t.field("gpu_memory"), e);
                        None
                    }
                });
            let node_binary = t
                .string(d, "node_binary", false, "a path to dayshift-node")
                .map(|(s, _)| path_of(base, &s));
            cfg.server_types.insert(
                name,
                ServerType {
                    price: Price { hourly, monthly },
                    gpu,
                    gpu_memory,
                    node_binary,
                },
            );
        }
    }
    (cfg, firewall_span)
}

/// `provider.firewall` and `provider.firewall_sources`; returns where `firewall = "auto"`
/// is written when it is (the gateway is checked against it later).
fn parse_firewall(d: &mut Diag<'_>, p: &Table<'_, '_>, cfg: &mut ProviderConfig) -> Option<Span> {
    let mut auto_span = None;
    if let Some((name, span)) = p.string(
        d,
        "firewall",
        false,
        "a firewall name, or \"auto\" for one dayshift manages",
    ) {
        if cfg.kind == ProviderKind::Local {
            d.push(
                span.clone(),
                p.field("firewall"),
                "the local provider rents no server to fence: remove provider.firewall",
            );
        } else if name.trim().is_empty() || name.len() > 128 {
            d.push(
                span.clone(),
                p.field("firewall"),
                "expected the name of a firewall (1-128 characters) or \"auto\"",
            );
        }
        let setting = FirewallSetting::from_text(&name);
        if setting == FirewallSetting::Auto && cfg.kind != ProviderKind::Local {
            auto_span = Some(span);
        }
        cfg.firewall = Some(setting);
    }
    if let Some(node) = p.get("firewall_sources")
        && let Some(items) = p.strings(
            d,
            "firewall_sources",
            "a network such as \"203.0.113.7/32\"",
        )
    {
        if cfg.firewall != Some(FirewallSetting::Auto) {
            d.push(
                node.span.clone(),
                p.field("firewall_sources"),
                "firewall_sources only applies with firewall = \"auto\" (a named firewall keeps \
                 its own rules): set firewall = \"auto\" or remove firewall_sources",
            );
        }
        if items.is_empty() {
            d.push(
                node.span.clone(),
                p.field("firewall_sources"),
                "expected at least one network: the ingress's address(es), e.g. [\"203.0.113.7/32\"]",
            );
        }
        let mut sources = Vec::new();
        for (i, (text, span)) in items.into_iter().enumerate() {
            match text.parse::<Cidr>() {
                Ok(c) => sources.push(c),
                Err(e) => d.push(span, format!("{}[{i}]", p.field("firewall_sources")), e),
            }
        }
        sources.sort();
        sources.dedup();
        cfg.firewall_sources = Some(sources);
    }
    auto_span
}

fn parse_pools(
    d: &mut Diag<'_>,
    root: &Table<'_, '_>,
    provider: &ProviderConfig,
    base: &Path,
) -> BTreeMap<String, PoolConfig> {
    let mut out = BTreeMap::new();
    let Some(pools) = root.table(d, "pools") else {
        if root.get("pools").is_none() {
            root.missing(d, "pools", "at least one [pools.NAME] table");
        }
        return out;
    };
    let type_names: Vec<&str> = provider.server_types.keys().map(String::as_str).collect();
    for (name, kspan, node) in pools.entries() {
        if !name_ok(&name) {
            d.push(
                kspan.clone(),
                pools.field(&name),
                format!("\"{name}\" is not a valid pool name: use 1-63 lowercase letters, digits, '-' or '_'"),
            );
        }
        let Some(t) = node.as_table(d, pools.field(&name)) else {
            continue;
        };
        t.check_keys(d, POOL_KEYS);
        let model = t
            .string(d, "model", true, "the model name clients ask for")
            .map(|(s, _)| s)
            .unwrap_or_default();
        let model_source = t
            .string(
                d,
                "model_source",
                false,
                "a model path, \"mirror\" or \"hf:ORG/NAME\"",
            )
            .map(|(s, _)| {
                // A path is resolved against the config's folder, like every other path.
                if s == "mirror" || s.starts_with("hf:") {
                    s
                } else {
                    path_of(base, &s).display().to_string()
                }
            })
            .unwrap_or_else(|| "mirror".into());
        let server_types = list_of_names(
            d,
            &t,
            "server_types",
            &type_names,
            "server type",
            provider.kind,
        );
        let locations = t
            .strings(d, "locations", "a location name")
            .map(|v| v.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let image = t
            .string(d, "image", false, "an image name")
            .map(|(s, _)| s)
            .unwrap_or_else(|| "ubuntu-24.04".into());
        let max_nodes = match t.get("max_nodes") {
            Some(n) => zero_check(d, &t, "max_nodes", &n).unwrap_or(1),
            None => 8,
        };
        let min_nodes = t.integer(d, "min_nodes", 0, 1000).map(|(v, span)| {
            if v as u32 > max_nodes {
                d.push(
                    span,
                    t.field("min_nodes"),
                    format!(
                        "min_nodes {v} is above max_nodes {max_nodes}: the pool could never \
                         reach it; lower min_nodes or raise max_nodes"
                    ),
                );
            }
            v as u32
        });
        let target_in_flight = t
            .integer(d, "target_in_flight", 1, 100_000)
            .map(|(v, _)| v as u32)
            .unwrap_or(4);
        let scale_up_after_secs = duration(d, &t, "scale_up_after", 60);
        let scale_down_after_secs = duration(d, &t, "scale_down_after", 900);
        let wake_on_demand = t
            .boolean(d, "wake_on_demand")
            .map(|(b, _)| b)
            .unwrap_or(false);
        let min_wake_secs = duration(d, &t, "min_wake", provider.billing.unit_secs);
        let quantize = t
            .string(d, "quantize", false, "a GGUF type such as \"q4_k\"")
            .and_then(|(q, span)| {
                let types = crate::node::QUANTIZE_TYPES;
                if !types.contains(&q.as_str()) {
                    d.push(
                        span,
                        t.field("quantize"),
                        format!(
                            "\"{q}\" is not a type nodes quantize to: use one of {}",
                            types.join(", ")
                        ),
                    );
                    None
                } else if model_source.to_ascii_lowercase().ends_with(".gguf") {
                    d.push(
                        span,
                        t.field("quantize"),
                        "the model source is a GGUF file, already quantized: leave quantize out"
                            .to_string(),
                    );
                    None
                } else {
                    Some(q)
                }
            });
        let slots = t.integer(d, "slots", 1, 4096).map(|(v, _)| v as u32);
        let context_tokens = t
            .integer(d, "context_tokens", 16, 16_777_216)
            .map(|(v, _)| v as u32);
        let pool = PoolConfig {
            model,
            model_source,
            server_types,
            locations,
            image,
            max_nodes,
            cold_start_secs: duration(d, &t, "cold_start", 300),
            queue_timeout_secs: duration(d, &t, "queue_timeout", 30),
            drain_timeout_secs: duration(d, &t, "drain_timeout", 120),
            billing_aware_stop: t
                .boolean(d, "billing_aware_stop")
                .map(|(b, _)| b)
                .unwrap_or(false),
            min_nodes,
            target_in_flight,
            scale_up_after_secs,
            scale_down_after_secs,
            wake_on_demand,
            min_wake_secs,
            quantize,
            slots,
            context_tokens,
            prefix_cache: t.boolean(d, "prefix_cache").map(|(b, _)| b).unwrap_or(true),
        };
        out.insert(name, pool);
    }
    if out.is_empty() && d.is_empty() {
        d.push(
            pools.span(),
            "pools",
            "no pools defined: add a [pools.NAME] table",
        );
    }
    out
}

fn zero_check(d: &mut Diag<'_>, t: &Table<'_, '_>, key: &str, n: &Node<'_, '_>) -> Option<u32> {
    if let toml::de::DeValue::Integer(i) = n.value
        && i.as_str() == "0"
    {
        d.push(
            n.span.clone(),
            t.field(key),
            format!("{key} must be at least 1"),
        );
        return None;
    }
    t.integer(d, key, 1, 1000).map(|(v, _)| v as u32)
}

fn list_of_names(
    d: &mut Diag<'_>,
    t: &Table<'_, '_>,
    key: &str,
    valid: &[&str],
    what: &str,
    kind: ProviderKind,
) -> Vec<String> {
    let Some(items) = t.strings(d, key, &format!("a {what} name")) else {
        if t.get(key).is_none() && kind != ProviderKind::Local {
            t.missing(d, key, "the server types to rent, in order of preference");
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, span) in items {
        if !valid.contains(&name.as_str()) {
            let hint = match closest(&name, valid) {
                Some(s) => format!("; did you mean \"{s}\"?"),
                None if valid.is_empty() => "; define it under [provider.server_types]".into(),
                None => format!("; defined: {}", valid.join(", ")),
            };
            d.push(
                span,
                t.field(key),
                format!("unknown {what} \"{name}\"{hint}"),
            );
        } else {
            out.push(name);
        }
    }
    out
}

fn parse_gateway(d: &mut Diag<'_>, root: &Table<'_, '_>, base: &Path) -> GatewayConfig {
    let mut g = GatewayConfig {
        listen: "0.0.0.0:443".into(),
        http_listen: None,
        public_url: None,
        node_ca: None,
        node_address: None,
        max_body_bytes: 4 * 1024 * 1024,
        header_read_timeout_secs: 10,
        body_read_timeout_secs: 30,
        idle_timeout_secs: 60,
        max_connections_per_address: 256,
    };
    if let Some(t) = root.table(d, "gateway") {
        t.check_keys(d, GATEWAY_KEYS);
        for key in ["listen", "http_listen"] {
            if let Some((s, span)) = t.string(d, key, false, "an address such as \"0.0.0.0:443\"") {
                if s.parse::<std::net::SocketAddr>().is_err() {
                    d.push(
                        span,
                        t.field(key),
                        format!("expected IP:PORT such as \"0.0.0.0:443\", found \"{s}\""),
                    );
                }
                if key == "listen" {
                    g.listen = s;
                } else {
                    g.http_listen = Some(s);
                }
            }
        }
        g.public_url = t.string(d, "public_url", false, "a URL").map(|(s, _)| s);
        if let Some((a, span)) = t.string(d, "node_address", false, "an IP:port address") {
            if a.parse::<std::net::SocketAddr>().is_err() {
                d.push(
                    span,
                    t.field("node_address"),
                    format!(
                        "expected an IP:port address such as \"203.0.113.5:443\", found \"{a}\""
                    ),
                );
            }
            g.node_address = Some(a);
        }
        g.node_ca = t
            .string(d, "node_ca", false, "a PEM file's path")
            .map(|(s, _)| path_of(base, &s));
        if let Some((v, _)) = t.integer(d, "max_body_bytes", 1024, 1 << 30) {
            g.max_body_bytes = v as u64;
        }
        g.header_read_timeout_secs = positive_duration(d, &t, "header_read_timeout", 10);
        g.body_read_timeout_secs = positive_duration(d, &t, "body_read_timeout", 30);
        g.idle_timeout_secs = positive_duration(d, &t, "idle_timeout", 60);
        if let Some((v, _)) = t.integer(d, "max_connections_per_address", 1, 1_000_000) {
            g.max_connections_per_address = v as u64;
        }
    }
    g
}

/// A duration of at least one second (a zero timeout would refuse everything).
fn positive_duration(d: &mut Diag<'_>, t: &Table<'_, '_>, key: &str, default: u64) -> u64 {
    let v = duration(d, t, key, default);
    if v == 0 {
        if let Some(n) = t.get(key) {
            d.push(
                n.span.clone(),
                t.field(key),
                "expected a duration of at least 1s, found 0".to_string(),
            );
        }
        return default;
    }
    v
}

fn parse_tls(d: &mut Diag<'_>, root: &Table<'_, '_>, base: &Path) -> TlsConfig {
    let mut tls = TlsConfig {
        mode: TlsMode::SelfSigned,
        domains: Vec::new(),
        contact: Vec::new(),
        directory: LETS_ENCRYPT.into(),
        directory_ca: None,
    };
    let Some(t) = root.table(d, "tls") else {
        return tls;
    };
    t.check_keys(d, TLS_KEYS);
    if let Some((m, span)) = t.string(d, "mode", false, "\"acme\", \"self-signed\" or \"off\"") {
        tls.mode = match m.as_str() {
            "acme" => TlsMode::Acme,
            "self-signed" => TlsMode::SelfSigned,
            "off" => TlsMode::Off,
            other => {
                d.push(
                    span,
                    t.field("mode"),
                    format!("expected \"acme\", \"self-signed\" or \"off\", found \"{other}\""),
                );
                TlsMode::SelfSigned
            }
        };
    }
    tls.domains = t
        .strings(d, "domains", "a domain name")
        .map(|v| v.into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    tls.contact = t
        .strings(d, "contact", "a contact such as \"mailto:ops@example.org\"")
        .map(|v| v.into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    if let Some((s, _)) = t.string(d, "directory", false, "an ACME directory URL") {
        tls.directory = s;
    }
    tls.directory_ca = t
        .string(d, "directory_ca", false, "a PEM file path")
        .map(|(s, _)| path_of(base, &s));
    if tls.mode == TlsMode::Acme && tls.domains.is_empty() {
        d.push(
            t.span(),
            t.field("domains"),
            "tls.mode = \"acme\" needs at least one domain in `domains`",
        );
    }
    tls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip_and_match_serde() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!("Hetzner".parse::<ProviderKind>(), Err(()));
        assert_eq!(ProviderKind::Scaleway.billing_rule(), BillingRule::SCALEWAY);
    }
}

#[cfg(test)]
mod node_binary_tests {
    use super::*;

    const CFG: &str = r#"
cluster = "c"
[provider]
kind = "scaleway"
ssh_key = "id_ed25519"
node_binary = "bin/dayshift-node"
node_binary_cuda = "bin/dayshift-node-cuda"
[provider.server_types."L4-1-24G"]
hourly = "0.75"
gpu = "NVIDIA L4 24 GB"
[provider.server_types."H100-1-80G"]
hourly = "2.73"
gpu = "NVIDIA H100 80 GB"
node_binary = "/opt/h100/dayshift-node"
[provider.server_types."POP2-4C-16G"]
hourly = "0.10"
[pools.chat]
model = "m"
server_types = ["L4-1-24G", "H100-1-80G"]
[pools.cpu]
model = "m"
server_types = ["POP2-4C-16G"]
"#;

    #[test]
    fn the_node_binary_and_device_follow_the_server_type() {
        let c = Config::parse("dayshift.toml", CFG, Path::new("/etc/dayshift")).unwrap();
        let p = &c.provider;
        let l4 = p.node_binary_for("L4-1-24G");
        assert_eq!(
            l4.path.as_deref(),
            Some(Path::new("/etc/dayshift/bin/dayshift-node-cuda"))
        );
        assert_eq!(l4.device, "cuda");
        // A type's own binary wins over node_binary_cuda.
        let h100 = p.node_binary_for("H100-1-80G");
        assert_eq!(
            h100.path.as_deref(),
            Some(Path::new("/opt/h100/dayshift-node"))
        );
        assert_eq!(h100.device, "cuda");
        let cpu = p.node_binary_for("POP2-4C-16G");
        assert_eq!(
            cpu.path.as_deref(),
            Some(Path::new("/etc/dayshift/bin/dayshift-node"))
        );
        assert_eq!(cpu.device, "cpu");
        assert!(p.is_gpu_type("L4-1-24G") && !p.is_gpu_type("POP2-4C-16G"));

        // Without node_binary_cuda a GPU type gets node_binary (or the default next to
        // dayshift), still with device = "cuda": a CPU build then fails at start, clearly.
        let no_cuda = CFG.replace("node_binary_cuda = \"bin/dayshift-node-cuda\"\n", "");
        let c = Config::parse("dayshift.toml", &no_cuda, Path::new("/etc/dayshift")).unwrap();
        let l4 = c.provider.node_binary_for("L4-1-24G");
        assert_eq!(
            l4.path.as_deref(),
            Some(Path::new("/etc/dayshift/bin/dayshift-node"))
        );
        assert_eq!(l4.device, "cuda");
        let bare = no_cuda.replace("node_binary = \"bin/dayshift-node\"\n", "");
        let c = Config::parse("dayshift.toml", &bare, Path::new("/etc/dayshift")).unwrap();
        assert_eq!(c.provider.node_binary_for("L4-1-24G").path, None);
        assert_eq!(c.provider.node_binary_for("unknown").device, "cpu");
    }

    #[test]
    fn a_misspelt_binary_key_is_named_with_its_line() {
        let bad = CFG.replace("node_binary_cuda", "node_binary_gpu");
        let e = Config::parse("dayshift.toml", &bad, Path::new("/etc")).unwrap_err();
        let p = &e.0[0];
        assert_eq!(p.line, 7, "{p}");
        assert!(p.field.contains("node_binary_gpu"), "{p}");
    }
}
