//! The russh client: host key check, login, exec and SFTP upload.

use std::sync::{Arc, Mutex};

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use tokio::io::AsyncWriteExt;

/// Accepts exactly one host key and remembers what else it was shown.
pub(crate) struct Verifier {
    expected: PublicKey,
    /// Set to the offered key's fingerprint when it did not match.
    pub(crate) mismatch: Arc<Mutex<Option<String>>>,
}

impl Verifier {
    pub(crate) fn new(expected: PublicKey) -> Self {
        Self {
            expected,
            mismatch: Arc::new(Mutex::new(None)),
        }
    }
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => {
                PublicKey::new(c.public_key().clone(), c.comment())
            }
        };
        if key.key_data() == self.expected.key_data() {
            return Ok(true);
        }
        let fp = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        tracing::error!(offered = %fp, "server presented an unexpected host key; refusing");
        if let Ok(mut m) = self.mismatch.lock() {
            *m = Some(fp);
        }
        Ok(false)
    }
}

/// Logs in with a private key; `Ok(false)` when refused.
pub(crate) async fn authenticate(
    handle: &mut Handle<Verifier>,
    user: &str,
    key: &russh::keys::PrivateKey,
) -> Result<bool, russh::Error> {
    let key = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None);
    Ok(handle.authenticate_publickey(user, key).await?.success())
}

/// Output of a remote command.
pub(crate) struct ExecOutput {
    pub(crate) status: Option<u32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs a command in a session channel and collects its output.
pub(crate) async fn exec(
    handle: &Handle<Verifier>,
    command: &str,
) -> Result<ExecOutput, russh::Error> {
    let mut ch = handle.channel_open_session().await?;
    ch.exec(true, command).await?;
    let mut out = ExecOutput {
        status: None,
        stdout: String::new(),
        stderr: String::new(),
    };
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.stdout.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExtendedData { data, .. } => {
                out.stderr.push_str(&String::from_utf8_lossy(&data))
            }
            ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
            _ => {}
        }
    }
    Ok(out)
}

/// Uploads files over SFTP: (remote path, content).
pub(crate) async fn upload(
    handle: &Handle<Verifier>,
    files: &[(String, &[u8])],
) -> Result<(), String> {
    let ch = handle
        .channel_open_session()
        .await
        .map_err(|e| format!("opening a channel: {e}"))?;
    ch.request_subsystem(true, "sftp")
        .await
        .map_err(|e| format!("requesting the sftp subsystem: {e}"))?;
    let sftp = SftpSession::new(ch.into_stream())
        .await
        .map_err(|e| format!("starting SFTP: {e}"))?;
    for (path, content) in files {
        let mut f = sftp
            .create(path.as_str())
            .await
            .map_err(|e| format!("creating {path}: {e}"))?;
        f.write_all(content)
            .await
            .map_err(|e| format!("writing {path}: {e}"))?;
        f.shutdown()
            .await
            .map_err(|e| format!("closing {path}: {e}"))?;
    }
    sftp.close()
        .await
        .map_err(|e| format!("closing SFTP: {e}"))?;
    Ok(())
}
