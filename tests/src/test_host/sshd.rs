//! One OpenSSH `sshd` process for a test host.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::cloud_init::CloudConfig;
use super::procs::{MARKER_VAR, is_root};

/// Path of the OpenSSH server (installed by `scripts/deps/sshd.sh`).
pub const SSHD: &str = "/usr/sbin/sshd";

/// Fails with a hint when sshd is missing.
pub fn check_installed() -> anyhow::Result<()> {
    if !Path::new(SSHD).exists() {
        bail!("{SSHD} is missing: run scripts/install-test-deps.sh (installs openssh-server)");
    }
    if is_root() {
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
    }
    Ok(())
}

/// A running sshd.
pub struct Sshd {
    child: Option<Child>,
}

impl Sshd {
    /// Writes the host key and config into `dir` and starts sshd on `ip:port`.
    pub async fn start(
        dir: &Path,
        ip: Ipv4Addr,
        port: u16,
        config: &CloudConfig,
        authorized: &[String],
        marker: &str,
    ) -> anyhow::Result<Self> {
        let key = dir.join("ssh_host_ed25519_key");
        match config.ssh_keys.get("ed25519_private") {
            Some(pem) => {
                std::fs::write(&key, pem)?;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            }
            None => {
                let status = Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&key)
                    .stdin(Stdio::null())
                    .status()
                    .context("running ssh-keygen")?;
                if !status.success() {
                    bail!("ssh-keygen failed: {status}");
                }
            }
        }
        let auth_file = dir.join("authorized_keys");
        std::fs::write(&auth_file, authorized.join("\n") + "\n")?;
        std::fs::set_permissions(&auth_file, std::fs::Permissions::from_mode(0o600))?;
        // PYENV_REHASH_TIMEOUT=0: a machine whose root shell runs `pyenv init` (this dev
        // image does) rehashes in every `bash -c` sshd starts; a test host deleted during
        // that rehash leaves pyenv's lock behind, and every later command would wait 60 s
        // for it (seen: the end-to-end test stalled after the chaos test).
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress {ip}:{port}\nHostKey {key}\nAuthorizedKeysFile {auth}\n\
                 PidFile none\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 Subsystem sftp internal-sftp\nSetEnv {MARKER_VAR}={marker} PYENV_REHASH_TIMEOUT=0\nLogLevel VERBOSE\n",
                key = key.display(),
                auth = auth_file.display(),
            ),
        )?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .env(MARKER_VAR, marker)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting sshd")?;
        let mut me = Self { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect((ip, port)).await.is_ok() {
                return Ok(me);
            }
            let exited = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                bail!("sshd exited ({status}) on {ip}:{port}: {log}");
            }
            if Instant::now() > deadline {
                me.stop();
                bail!("sshd did not listen on {ip}:{port} within 20s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills sshd (its process group) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: signalling a process group we created has no memory-safety preconditions.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
