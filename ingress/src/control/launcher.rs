//! The scheduler's [`Launcher`]: what server to create for a node, and how to start
//! `dayshift-node` on it. The `local` provider runs the node as a child process whose
//! config travels as the server's user data; cloud providers get cloud-init with a fresh
//! SSH host key, then an SSH bootstrap that checks that key, uploads the binary and the
//! node config (with a fresh one-time join token) and starts it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dayshift_config::node::{
    EngineConfig, ModelConfig, ModelSource, NodeConfig, TlsConfig as NodeTlsConfig,
    TlsMode as NodeTlsMode,
};
use dayshift_config::protocol::Secret;
use dayshift_config::settings::{PoolConfig, ProviderKind, TlsMode};
use dayshift_provisioning::bootstrap::{
    Artifacts, BootstrapError, BootstrapSettings, BootstrapTarget, FailureKind, StartCommand, Step,
    bootstrap,
};
use dayshift_provisioning::{
    NodeRequest, Placement, Server, ServerSpec, SshKeyPair, dayshift_labels, parse_public_key,
    prepare_node,
};
use dayshift_scheduler::{LaunchError, Launcher, NodeRecord};
use std::time::Duration;

use super::handle::ControlContext;
use crate::store::{StoreError, hash_secret, random_hex};

/// Where a node listens and keeps its files. The `local` provider fills in `{host}`,
/// `{port}` and `{dir}` itself, so there these are templates, not addresses.
enum NodePlace {
    /// On this machine (local provider): `listen = "{host}:{port}"`,
    /// `cache_dir = "{dir}/models"`.
    LocalTemplate,
    /// On a rented server at `ip:port`, files under `install_dir`.
    Server {
        ip: std::net::Ipv4Addr,
        port: u16,
        install_dir: String,
    },
}

/// A store failure while launching is transient: the loop tries again.
fn store_failed(what: &str, e: StoreError) -> LaunchError {
    LaunchError::retry(format!("{what}: {e}"))
}

/// The reconcile loop's policy for a failed bootstrap: a timeout or a failed
/// connection or step (the server may still be booting, the network may blink) is tried
/// again; a host key that does not match (possible interception) or a refused login
/// (wrong operator key) cannot be fixed by trying again.
pub fn bootstrap_error_policy(e: &BootstrapError) -> LaunchError {
    let permanent = e.kind == FailureKind::HostKeyMismatch || e.step == Step::Authenticate;
    if permanent {
        LaunchError::give_up(e.to_string())
    } else {
        LaunchError::retry(e.to_string())
    }
}

/// Builds servers for nodes and starts `dayshift-node` on them.
pub struct NodeLauncher {
    ctx: ControlContext,
    node_binary: PathBuf,
    operator_key: Option<Arc<SshKeyPair>>,
    ingress_url: String,
    ingress_ca_pem: Option<String>,
}

impl NodeLauncher {
    /// A launcher for the server's config. `ingress_url` is what nodes register with;
    /// `ingress_ca_pem` the CA they trust for it (private/test CA or self-signed).
    pub fn new(
        ctx: ControlContext,
        node_binary: PathBuf,
        operator_key: Option<Arc<SshKeyPair>>,
        ingress_url: String,
        ingress_ca_pem: Option<String>,
    ) -> Self {
        NodeLauncher {
            ctx,
            node_binary,
            operator_key,
            ingress_url,
            ingress_ca_pem,
        }
    }

    fn pool(&self, node: &NodeRecord) -> Result<&PoolConfig, LaunchError> {
        self.ctx.config.pools.get(&node.pool).ok_or_else(|| {
            LaunchError::give_up(format!(
                "pool {} is no longer configured; add it back or let the node fail",
                node.pool
            ))
        })
    }

    fn operator_key(&self) -> Result<&Arc<SshKeyPair>, LaunchError> {
        self.operator_key.as_ref().ok_or_else(|| {
            LaunchError::give_up("no operator SSH key: set provider.ssh_key in dayshift.toml")
        })
    }

    /// A fresh one-time join token for `node`, stored hashed with its expiry.
    async fn join_token(&self, node: &NodeRecord) -> Result<Secret, LaunchError> {
        let token = Secret::new(format!("dsj-{}", random_hex(24)));
        let expires =
            self.ctx.clock.now().timestamp_millis() + self.ctx.join_token_ttl.as_millis() as i64;
        self.ctx
            .store
            .set_join_token(&node.id, &hash_secret(token.expose()), expires)
            .await
            .map_err(|e| store_failed("storing the join token", e))?;
        Ok(token)
    }

    /// The node config for `node`: registration, TLS, its pool's model.
    fn node_config(
        &self,
        node: &NodeRecord,
        pool: &PoolConfig,
        token: &Secret,
        place: &NodePlace,
        device: &str,
    ) -> Result<NodeConfig, LaunchError> {
        let ingress_address = match &self.ctx.config.gateway.node_address {
            Some(a) => Some(a.parse().map_err(|_| {
                LaunchError::give_up(format!(
                    "gateway.node_address {a:?} is not an address (ip:port)"
                ))
            })?),
            None => None,
        };
        let (listen, advertise_url, cache_dir, subject_alt_names) = match place {
            // Placeholders: the template fields are replaced in `node_config_text`.
            NodePlace::LocalTemplate => (
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                None,
                PathBuf::new(),
                vec![],
            ),
            NodePlace::Server {
                ip,
                port,
                install_dir,
            } => (
                std::net::SocketAddr::from((*ip, *port)),
                Some(format!("https://{ip}:{port}")),
                PathBuf::from(format!("{install_dir}/models")),
                vec![ip.to_string()],
            ),
        };
        Ok(NodeConfig {
            node_id: node.id.clone(),
            ingress_url: Some(self.ingress_url.clone()),
            join_token: token.clone(),
            ingress_ca_file: None,
            ingress_ca_pem: self.ingress_ca_pem.clone(),
            ingress_address,
            listen,
            advertise_url,
            drain_grace_secs: NodeConfig::DEFAULT_DRAIN_GRACE_SECS,
            cache_dir,
            tls: NodeTlsConfig {
                mode: NodeTlsMode::SelfSigned,
                subject_alt_names,
                cert_file: None,
                key_file: None,
            },
            engine: node_engine(pool, device),
            models: vec![node_model(pool)],
        })
    }

    /// The node config as the TOML file the node reads (`listen` and `cache_dir` as
    /// the local provider's templates where it runs the node).
    fn node_config_text(
        &self,
        node: &NodeRecord,
        pool: &PoolConfig,
        token: &Secret,
        place: NodePlace,
        device: &str,
    ) -> Result<String, LaunchError> {
        let config = self.node_config(node, pool, token, &place, device)?;
        let mut table = toml::Table::try_from(&config)
            .map_err(|e| LaunchError::give_up(format!("writing the node config: {e}")))?;
        if matches!(place, NodePlace::LocalTemplate) {
            table.insert("listen".into(), "{host}:{port}".into());
            table.insert("cache_dir".into(), "{dir}/models".into());
        }
        toml::to_string(&table)
            .map_err(|e| LaunchError::give_up(format!("writing the node config: {e}")))
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
        let b = &self.ctx.config.provider.bootstrap;
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
/// The `[[models]]` entry of a node of `pool`: its model, where the node gets it, and
/// the pool's `quantize`.
pub fn node_model(pool: &PoolConfig) -> ModelConfig {
    ModelConfig {
        name: pool.model.clone(),
        source: model_source(pool),
        dtype: None,
        quantize: pool.quantize.clone(),
    }
}

/// The `[engine]` of a node of `pool` on `device`: the pool's `slots` and `slots` ×
/// `context_tokens` of KV cache ([`PoolConfig::node_engine`], the settings the memory
/// check of `dayshift config check` counts with).
pub fn node_engine(pool: &PoolConfig, device: &str) -> EngineConfig {
    EngineConfig {
        device: device.to_string(),
        ..pool.node_engine()
    }
}

fn model_source(pool: &PoolConfig) -> ModelSource {
    let src = pool.model_source.as_str();
    if src == "mirror" {
        ModelSource::Mirror { model: None }
    } else if let Some(repo) = src.strip_prefix("hf:") {
        ModelSource::Hf {
            repo: repo.to_string(),
            revision: "main".to_string(),
        }
    } else {
        ModelSource::Local {
            path: PathBuf::from(src),
        }
    }
}

#[async_trait]
impl Launcher for NodeLauncher {
    async fn spec(&self, node: &NodeRecord) -> Result<ServerSpec, LaunchError> {
        let pool = self.pool(node)?;
        let cfg = &self.ctx.config;
        let (placement, fallbacks) = Self::placements(pool);
        if cfg.provider.kind == ProviderKind::Local {
            // The local provider starts the node at once with this config as its user
            // data (`{host}`, `{port}`, `{dir}` are filled in by the provider).
            let token = self.join_token(node).await?;
            let device = cfg.provider.node_binary_for(&placement.server_type).device;
            let text =
                self.node_config_text(node, pool, &token, NodePlace::LocalTemplate, device)?;
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
        let operator = self.operator_key()?;
        let prepared = prepare_node(NodeRequest {
            cluster: &cfg.cluster,
            node_id: &node.id,
            pool: &node.pool,
            name: format!("dayshift-{}", node.id),
            placement,
            fallbacks,
            image: &pool.image,
            operator_key: operator,
            // The provider names the operator key it registered at serve start.
            provider_ssh_keys: vec![],
            files: vec![],
        })
        .map_err(|e| LaunchError::retry(format!("making the node's host key: {e}")))?;
        // The host key's public half is kept before the server exists, so a restarted
        // ingress can still verify the server it finds.
        self.ctx
            .store
            .set_host_key(&node.id, &prepared.host_key.public_openssh())
            .await
            .map_err(|e| store_failed("storing the host key", e))?;
        Ok(prepared.spec)
    }

    async fn bootstrap(&self, node: &NodeRecord, server: &Server) -> Result<(), LaunchError> {
        if self.ctx.config.provider.kind == ProviderKind::Local {
            return Ok(());
        }
        let pool = self.pool(node)?;
        let operator = self.operator_key()?;
        let ip = server.ipv4.ok_or_else(|| {
            LaunchError::retry(format!("server {} has no IPv4 address yet", server.id))
        })?;
        let row = self
            .ctx
            .store
            .get_node(&node.id)
            .await
            .map_err(|e| store_failed("reading the node row", e))?
            .ok_or_else(|| LaunchError::give_up(format!("node {} has no row", node.id)))?;
        let host_key = row
            .host_key
            .as_deref()
            .ok_or_else(|| {
                LaunchError::give_up(format!(
                    "node {} has no recorded host key; it cannot be verified",
                    node.id
                ))
            })
            .and_then(|k| {
                parse_public_key(k)
                    .map_err(|e| LaunchError::give_up(format!("stored host key: {e}")))
            })?;
        // The binary follows the server type that was rented (a fallback type may differ).
        let choice = self
            .ctx
            .config
            .provider
            .node_binary_for(&server.server_type);
        let path = choice.path.unwrap_or_else(|| self.node_binary.clone());
        let binary = tokio::fs::read(&path).await.map_err(|e| {
            LaunchError::give_up(format!(
                "reading the node binary {} for server type {}: {e} (set provider.node_binary, \
                 provider.node_binary_cuda or the type's node_binary)",
                path.display(),
                server.server_type
            ))
        })?;
        let port = self.ctx.config.provider.bootstrap.node_port;
        let token = self.join_token(node).await?;
        let install_dir = install_dir(&self.ctx.config.provider.bootstrap.install_dir, node);
        let config = self.node_config_text(
            node,
            pool,
            &token,
            NodePlace::Server {
                ip,
                port,
                install_dir,
            },
            choice.device,
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
        .map_err(|e| bootstrap_error_policy(&e))?;
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
            Some(crate::state_files::self_signed_paths(&config.state_dir).0)
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
