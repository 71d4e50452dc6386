//! The scheduler's [`Launcher`]: what server to create for a node, and how to start
//! `dayshift-node` on it. The `local` provider runs the node as a child process whose
//! config travels as the server's user data; cloud providers get cloud-init with a fresh
//! SSH host key, then an SSH bootstrap that checks that key, uploads the binary and the
//! node config (with a fresh one-time join token) and starts it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dayshift_config::protocol::Secret;
use dayshift_config::settings::{PoolConfig, ProviderKind, TlsMode};
use dayshift_provisioning::bootstrap::{
    Artifacts, BootstrapSettings, BootstrapTarget, StartCommand, bootstrap,
};
use dayshift_provisioning::{
    NodeRequest, Placement, Server, ServerSpec, SshKeyPair, dayshift_labels, parse_public_key,
    prepare_node,
};
use dayshift_scheduler::{Launcher, NodeRecord};
use std::time::Duration;

use crate::server::state::SharedState;
use crate::store::{NodeStore, hash_secret, random_hex};

/// Where a node listens and keeps its files.
struct NodePlace {
    listen: String,
    advertise: Option<String>,
    cache_dir: String,
    subject_alt_names: Vec<String>,
    /// `engine.device`: `cuda` on a server type with a GPU, else `cpu`.
    device: &'static str,
}

/// Builds servers for nodes and starts `dayshift-node` on them.
pub struct NodeLauncher {
    state: SharedState,
    node_binary: PathBuf,
    operator_key: Option<Arc<SshKeyPair>>,
    ingress_url: String,
    ingress_ca_pem: Option<String>,
}

impl NodeLauncher {
    /// A launcher for the server's config. `ingress_url` is what nodes register with;
    /// `ingress_ca_pem` the CA they trust for it (private/test CA or self-signed).
    pub fn new(
        state: SharedState,
        node_binary: PathBuf,
        operator_key: Option<Arc<SshKeyPair>>,
        ingress_url: String,
        ingress_ca_pem: Option<String>,
    ) -> Self {
        NodeLauncher {
            state,
            node_binary,
            operator_key,
            ingress_url,
            ingress_ca_pem,
        }
    }

    fn pool(&self, node: &NodeRecord) -> Result<&PoolConfig, String> {
        self.state.config.pools.get(&node.pool).ok_or_else(|| {
            format!(
                "pool {} is no longer configured; add it back or let the node fail",
                node.pool
            )
        })
    }

    /// A fresh one-time join token for `node`, stored hashed with its expiry.
    async fn join_token(&self, node: &NodeRecord) -> Result<Secret, String> {
        let token = Secret::new(format!("dsj-{}", random_hex(24)));
        let expires = chrono::Utc::now().timestamp_millis()
            + self.state.tuning.join_token_ttl.as_millis() as i64;
        self.state
            .store
            .set_join_token(&node.id, &hash_secret(token.expose()), expires)
            .await
            .map_err(|e| format!("storing the join token: {e}"))?;
        Ok(token)
    }

    /// The node config (TOML) for `node`: registration, TLS, its pool's model.
    fn node_config(
        &self,
        node: &NodeRecord,
        pool: &PoolConfig,
        token: &Secret,
        place: NodePlace,
    ) -> Result<String, String> {
        let NodePlace {
            listen,
            advertise,
            cache_dir,
            subject_alt_names,
            device,
        } = place;
        let source = model_source(pool);
        let mut t = toml::Table::new();
        t.insert("node_id".into(), node.id.clone().into());
        t.insert("ingress_url".into(), self.ingress_url.clone().into());
        t.insert("join_token".into(), token.expose().to_string().into());
        if let Some(pem) = &self.ingress_ca_pem {
            t.insert("ingress_ca_pem".into(), pem.clone().into());
        }
        if let Some(addr) = &self.state.config.gateway.node_address {
            t.insert("ingress_address".into(), addr.clone().into());
        }
        t.insert("listen".into(), listen.into());
        if let Some(a) = advertise {
            t.insert("advertise_url".into(), a.into());
        }
        t.insert("cache_dir".into(), cache_dir.into());
        let mut tls = toml::Table::new();
        tls.insert("mode".into(), "self_signed".into());
        tls.insert(
            "subject_alt_names".into(),
            toml::Value::Array(subject_alt_names.into_iter().map(Into::into).collect()),
        );
        t.insert("tls".into(), tls.into());
        let mut engine = toml::Table::new();
        engine.insert("device".into(), device.into());
        t.insert("engine".into(), engine.into());
        let mut model = toml::Table::new();
        model.insert("name".into(), pool.model.clone().into());
        model.insert("source".into(), source);
        t.insert(
            "models".into(),
            toml::Value::Array(vec![toml::Value::Table(model)]),
        );
        toml::to_string(&t).map_err(|e| format!("writing the node config: {e}"))
    }

    fn placements(pool: &PoolConfig) -> (Placement, Vec<Placement>) {
        let locations: Vec<Option<String>> = if pool.locations.is_empty() {
            vec![None]
        } else {
            pool.locations.iter().cloned().map(Some).collect()
        };
        let mut all = Vec::new();
        for t in &pool.server_types {
            for l in &locations {
                all.push(Placement {
                    server_type: t.clone(),
                    location: l.clone(),
                });
            }
        }
        let first = all.first().cloned().unwrap_or(Placement {
            server_type: "local".into(),
            location: None,
        });
        let rest = all.into_iter().skip(1).collect();
        (first, rest)
    }

    fn bootstrap_settings(&self, node: &NodeRecord) -> BootstrapSettings {
        let b = &self.state.config.provider.bootstrap;
        BootstrapSettings {
            port: b.ssh_port,
            user: b.ssh_user.clone(),
            install_dir: install_dir(&b.install_dir, node),
            binary_name: "dayshift-node".into(),
            config_name: "node.toml".into(),
            start: match &b.start_command {
                Some(cmd) => StartCommand::Shell(cmd.clone()),
                None => StartCommand::default(),
            },
            connect_patience: Duration::from_secs(180),
            step_timeout: Duration::from_secs(180),
        }
    }
}

/// The install folder on the server; `{node}` is replaced by the node id.
fn install_dir(template: &str, node: &NodeRecord) -> String {
    template.replace("{node}", &node.id)
}

/// The node-config model source for a pool: a path, the mirror, or the hub.
fn model_source(pool: &PoolConfig) -> toml::Value {
    let mut s = toml::Table::new();
    let src = pool.model_source.as_str();
    if src == "mirror" {
        s.insert("type".into(), "mirror".into());
    } else if let Some(repo) = src.strip_prefix("hf:") {
        s.insert("type".into(), "hf".into());
        s.insert("repo".into(), repo.into());
    } else {
        s.insert("type".into(), "local".into());
        s.insert("path".into(), src.into());
    }
    toml::Value::Table(s)
}

#[async_trait]
impl Launcher for NodeLauncher {
    async fn spec(&self, node: &NodeRecord) -> Result<ServerSpec, String> {
        let pool = self.pool(node)?;
        let cfg = &self.state.config;
        let (placement, fallbacks) = Self::placements(pool);
        if cfg.provider.kind == ProviderKind::Local {
            // The local provider starts the node at once with this config as its user
            // data (`{host}`, `{port}`, `{dir}` are filled in by the provider).
            let token = self.join_token(node).await?;
            let device = cfg.provider.node_binary_for(&placement.server_type).device;
            let text = self.node_config(
                node,
                pool,
                &token,
                NodePlace {
                    listen: "{host}:{port}".into(),
                    advertise: None,
                    cache_dir: "{dir}/models".into(),
                    subject_alt_names: vec![],
                    device,
                },
            )?;
            return Ok(ServerSpec {
                name: node.id.clone(),
                server_type: placement.server_type,
                image: pool.image.clone(),
                location: placement.location,
                labels: dayshift_labels(&cfg.cluster, &node.id, &node.pool),
                ssh_keys: vec![],
                user_data: Some(text),
                fallbacks,
            });
        }
        let operator = self.operator_key.as_ref().ok_or_else(|| {
            "no operator SSH key: set provider.ssh_key in dayshift.toml".to_string()
        })?;
        let prepared = prepare_node(NodeRequest {
            cluster: &cfg.cluster,
            node_id: &node.id,
            pool: &node.pool,
            name: format!("dayshift-{}", node.id),
            placement,
            fallbacks,
            image: &pool.image,
            operator_key: operator,
            provider_ssh_keys: cfg.provider.ssh_key_name.iter().cloned().collect(),
            files: vec![],
        })
        .map_err(|e| format!("making the node's host key: {e}"))?;
        // The host key's public half is kept before the server exists, so a restarted
        // ingress can still verify the server it finds.
        self.state
            .store
            .set_host_key(&node.id, &prepared.host_key.public_openssh())
            .await
            .map_err(|e| format!("storing the host key: {e}"))?;
        Ok(prepared.spec)
    }

    async fn bootstrap(&self, node: &NodeRecord, server: &Server) -> Result<(), String> {
        if self.state.config.provider.kind == ProviderKind::Local {
            return Ok(());
        }
        let pool = self.pool(node)?;
        let operator = self.operator_key.as_ref().ok_or_else(|| {
            "no operator SSH key: set provider.ssh_key in dayshift.toml".to_string()
        })?;
        let ip = server
            .ipv4
            .ok_or_else(|| format!("server {} has no IPv4 address yet", server.id))?;
        let row = self
            .state
            .store
            .get_node(&node.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("node {} has no row", node.id))?;
        let host_key = row
            .host_key
            .as_deref()
            .ok_or_else(|| {
                format!(
                    "node {} has no recorded host key; it cannot be verified",
                    node.id
                )
            })
            .and_then(|k| parse_public_key(k).map_err(|e| format!("stored host key: {e}")))?;
        // The binary follows the server type that was rented (a fallback type may differ).
        let choice = self
            .state
            .config
            .provider
            .node_binary_for(&server.server_type);
        let path = choice.path.unwrap_or_else(|| self.node_binary.clone());
        let binary = tokio::fs::read(&path).await.map_err(|e| {
            format!(
                "reading the node binary {} for server type {}: {e} (set provider.node_binary, \
                 provider.node_binary_cuda or the type's node_binary)",
                path.display(),
                server.server_type
            )
        })?;
        let port = self.state.config.provider.bootstrap.node_port;
        let token = self.join_token(node).await?;
        let install = install_dir(&self.state.config.provider.bootstrap.install_dir, node);
        let config = self.node_config(
            node,
            pool,
            &token,
            NodePlace {
                listen: format!("{ip}:{port}"),
                advertise: Some(format!("https://{ip}:{port}")),
                cache_dir: format!("{install}/models"),
                subject_alt_names: vec![ip.to_string()],
                device: choice.device,
            },
        )?;
        let target = BootstrapTarget {
            host: IpAddr::V4(ip),
            expected_host_key: host_key,
        };
        let started = std::time::Instant::now();
        bootstrap(
            &target,
            operator,
            &Artifacts {
                binary,
                config: config.into_bytes(),
            },
            &self.bootstrap_settings(node),
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(node = %node.id, secs = started.elapsed().as_secs_f64(), "bootstrap done; dayshift-node started");
        Ok(())
    }
}

/// The URL nodes register with, and the CA they trust for it.
pub fn ingress_for_nodes(
    config: &dayshift_config::Config,
) -> anyhow::Result<(String, Option<String>)> {
    let scheme = if config.tls.mode == TlsMode::Off {
        "http"
    } else {
        "https"
    };
    let url = match &config.gateway.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let listen = config.gateway.listen.replace("0.0.0.0", "127.0.0.1");
            format!("{scheme}://{listen}")
        }
    };
    let ca_path = match (&config.gateway.node_ca, config.tls.mode) {
        (Some(p), _) => Some(p.clone()),
        (None, TlsMode::SelfSigned) => {
            Some(crate::server::tls::self_signed_paths(&config.state_dir).0)
        }
        _ => None,
    };
    let ca = match ca_path {
        Some(p) => Some(std::fs::read_to_string(&p).map_err(|e| {
            anyhow::anyhow!("reading the CA nodes should trust ({}): {e}", p.display())
        })?),
        None => None,
    };
    Ok((url, ca))
}
