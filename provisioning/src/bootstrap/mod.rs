//! SSH bootstrap of a fresh server: verify its host key, log in with the operator key,
//! upload the node binary and its config over SFTP, check their sha256 on the server,
//! and start the service. Each step has a timeout; errors name the step.

mod error;
mod settings;
mod ssh;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::PublicKey;
use sha2::{Digest, Sha256};

pub use error::{BootstrapError, FailureKind, Step};
pub use settings::{BootstrapSettings, StartCommand};

use crate::keys::SshKeyPair;
use ssh::Verifier;

/// The server to bootstrap.
#[derive(Debug, Clone)]
pub struct BootstrapTarget {
    /// Its address (the provider's public IPv4).
    pub host: IpAddr,
    /// The host key dayshift generated and put into its user data.
    pub expected_host_key: PublicKey,
}

/// What to upload.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The node binary.
    pub binary: Vec<u8>,
    /// The node's config file.
    pub config: Vec<u8>,
}

/// What a successful bootstrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapReport {
    /// Remote path of the binary.
    pub binary_path: String,
    /// Remote path of the config.
    pub config_path: String,
    /// sha256 (hex) of the binary, as verified on the server.
    pub binary_sha256: String,
    /// sha256 (hex) of the config, as verified on the server.
    pub config_sha256: String,
}

/// Quotes a string for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

struct Run<'a> {
    target: String,
    settings: &'a BootstrapSettings,
}

impl Run<'_> {
    fn err(&self, step: Step, kind: FailureKind, message: impl Into<String>) -> BootstrapError {
        BootstrapError {
            target: self.target.clone(),
            step,
            kind,
            message: message.into(),
        }
    }

    /// Runs one step under the step timeout.
    async fn step<T, F>(&self, step: Step, fut: F) -> Result<T, BootstrapError>
    where
        F: std::future::Future<Output = Result<T, String>>,
    {
        tracing::debug!(target = %self.target, %step, "bootstrap step");
        match tokio::time::timeout(self.settings.step_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(self.err(step, FailureKind::Failed, msg)),
            Err(_) => Err(self.err(
                step,
                FailureKind::Timeout,
                format!(
                    "no result within {:?}; check the server's network and load, then retry",
                    self.settings.step_timeout
                ),
            )),
        }
    }
}

async fn connect(
    run: &Run<'_>,
    target: &BootstrapTarget,
) -> Result<russh::client::Handle<Verifier>, BootstrapError> {
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: Some(run.settings.step_timeout),
        ..Default::default()
    });
    let addr = (target.host, run.settings.port);
    let deadline = Instant::now() + run.settings.connect_patience;
    loop {
        let verifier = Verifier::new(target.expected_host_key.clone());
        let mismatch = verifier.mismatch.clone();
        let attempt = tokio::time::timeout(
            run.settings.step_timeout,
            russh::client::connect(config.clone(), addr, verifier),
        )
        .await;
        let offered = mismatch.lock().ok().and_then(|m| m.clone());
        if let Some(fp) = offered {
            let expected = target
                .expected_host_key
                .fingerprint(russh::keys::HashAlg::Sha256);
            return Err(run.err(
                Step::VerifyHostKey,
                FailureKind::HostKeyMismatch,
                format!(
                    "server presented host key {fp}, expected {expected}; nothing was uploaded. \
                     The address may belong to another machine or the connection is intercepted: \
                     mark the node failed and delete the server"
                ),
            ));
        }
        let why = match attempt {
            Ok(Ok(handle)) => return Ok(handle),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no SSH handshake within {:?}", run.settings.step_timeout),
        };
        if Instant::now() >= deadline {
            return Err(run.err(
                Step::Connect,
                FailureKind::Failed,
                format!(
                    "cannot reach sshd on {}:{} within {:?}: {why}; check that the server booted \
                     and its firewall allows SSH",
                    target.host, run.settings.port, run.settings.connect_patience
                ),
            ));
        }
        tracing::debug!(target = %run.target, error = %why, "sshd not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_command(settings: &BootstrapSettings, binary: &str, config: &str) -> String {
    match &settings.start {
        StartCommand::Shell(template) => template
            .replace("{binary}", &sh_quote(binary))
            .replace("{config}", &sh_quote(config))
            .replace("{dir}", &sh_quote(&settings.install_dir)),
        StartCommand::Systemd { unit } => {
            let unit_file = format!("/etc/systemd/system/{unit}.service");
            format!(
                "cat > {uf} <<'DAYSHIFT_UNIT'\n[Unit]\nDescription=dayshift node\n\
                 After=network-online.target\nWants=network-online.target\n\n[Service]\n\
                 ExecStart={binary} serve --config {config}\nRestart=on-failure\nKillSignal=SIGTERM\n\
                 TimeoutStopSec=120\n\n[Install]\nWantedBy=multi-user.target\nDAYSHIFT_UNIT\n\
                 systemctl daemon-reload && systemctl enable {u} && systemctl restart {u}",
                uf = sh_quote(&unit_file),
                u = sh_quote(unit),
                binary = sh_quote(binary),
                config = sh_quote(config),
            )
        }
    }
}

/// Bootstraps one server. A host key mismatch aborts before anything is uploaded.
pub async fn bootstrap(
    target: &BootstrapTarget,
    operator_key: &SshKeyPair,
    artifacts: &Artifacts,
    settings: &BootstrapSettings,
) -> Result<BootstrapReport, BootstrapError> {
    let run = Run {
        target: format!("{}:{}", target.host, settings.port),
        settings,
    };
    let mut handle = connect(&run, target).await?;
    let authed = run
        .step(Step::Authenticate, async {
            ssh::authenticate(&mut handle, &settings.user, operator_key.private_key())
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
    if !authed {
        return Err(run.err(
            Step::Authenticate,
            FailureKind::Failed,
            format!(
                "the server refused the operator key for user {}; check that its public key \
                 ({}) is in the server's authorized keys",
                settings.user,
                operator_key.fingerprint()
            ),
        ));
    }
    let dir = settings.install_dir.trim_end_matches('/').to_string();
    let binary = format!("{dir}/{}", settings.binary_name);
    let config = format!("{dir}/{}", settings.config_name);
    let (bin_part, cfg_part) = (format!("{binary}.part"), format!("{config}.part"));

    let exec_ok = |step: Step, cmd: String| {
        let handle = &handle;
        let run = &run;
        async move {
            run.step(step, async {
                let out = ssh::exec(handle, &cmd).await.map_err(|e| e.to_string())?;
                match out.status {
                    Some(0) => Ok(out.stdout),
                    other => Err(format!(
                        "`{cmd}` exited with {other:?}: {}",
                        out.stderr.trim()
                    )),
                }
            })
            .await
        }
    };

    exec_ok(
        Step::Prepare,
        format!(
            "mkdir -p {} && chmod 755 {}",
            sh_quote(&dir),
            sh_quote(&dir)
        ),
    )
    .await?;
    run.step(Step::Upload, async {
        ssh::upload(
            &handle,
            &[
                (bin_part.clone(), artifacts.binary.as_slice()),
                (cfg_part.clone(), artifacts.config.as_slice()),
            ],
        )
        .await
    })
    .await?;
    let want_bin = sha256_hex(&artifacts.binary);
    let want_cfg = sha256_hex(&artifacts.config);
    let sums = exec_ok(
        Step::Verify,
        format!("sha256sum {} {}", sh_quote(&bin_part), sh_quote(&cfg_part)),
    )
    .await?;
    let got: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if got != [want_bin.as_str(), want_cfg.as_str()] {
        return Err(run.err(
            Step::Verify,
            FailureKind::Failed,
            format!(
                "checksums on the server {got:?} differ from the local ones [{want_bin}, {want_cfg}]: \
                 the upload was corrupted; retry the bootstrap"
            ),
        ));
    }
    exec_ok(
        Step::Install,
        format!(
            "chmod 755 {bp} && chmod 600 {cp} && mv -f {bp} {b} && mv -f {cp} {c}",
            bp = sh_quote(&bin_part),
            cp = sh_quote(&cfg_part),
            b = sh_quote(&binary),
            c = sh_quote(&config)
        ),
    )
    .await?;
    exec_ok(Step::Start, start_command(settings, &binary, &config)).await?;
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "done", "en")
        .await;
    tracing::info!(target = %run.target, %binary, "node bootstrapped and started");
    Ok(BootstrapReport {
        binary_path: binary,
        config_path: config,
        binary_sha256: want_bin,
        config_sha256: want_cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn shell_start_command_substitutes_quoted_paths() {
        let s = BootstrapSettings {
            start: StartCommand::Shell("nohup {binary} --config {config} >{dir}/log &".into()),
            install_dir: "/opt/x".into(),
            ..Default::default()
        };
        assert_eq!(
            start_command(&s, "/opt/x/bin", "/opt/x/c"),
            "nohup '/opt/x/bin' --config '/opt/x/c' >'/opt/x'/log &"
        );
        let d = start_command(&BootstrapSettings::default(), "/b", "/c");
        assert!(d.contains("ExecStart='/b' serve --config '/c'"));
        assert!(d.contains("systemctl enable 'dayshift-node'"));
    }
}
