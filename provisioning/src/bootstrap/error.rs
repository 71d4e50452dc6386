//! Bootstrap errors, each naming the step that failed.

/// A step of the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the TCP connection and the SSH handshake.
    Connect,
    /// Checking the server's host key against the expected one.
    VerifyHostKey,
    /// Logging in with the operator key.
    Authenticate,
    /// Creating the install directory.
    Prepare,
    /// Uploading the binary and config over SFTP.
    Upload,
    /// Checking sha256 sums on the server.
    Verify,
    /// Moving files into place.
    Install,
    /// Starting the service.
    Start,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Step::Connect => "connect",
            Step::VerifyHostKey => "verify host key",
            Step::Authenticate => "authenticate",
            Step::Prepare => "prepare install directory",
            Step::Upload => "upload",
            Step::Verify => "verify checksums",
            Step::Install => "install",
            Step::Start => "start",
        };
        f.write_str(s)
    }
}

/// What kind of failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server presented a different host key: possible interception; nothing was sent.
    HostKeyMismatch,
    /// The step did not finish within its timeout.
    Timeout,
    /// The step failed.
    Failed,
}

/// A failed bootstrap.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bootstrap of {target} failed at step `{step}`: {message}")]
pub struct BootstrapError {
    /// The server address.
    pub target: String,
    /// Step that failed.
    pub step: Step,
    /// Kind of failure.
    pub kind: FailureKind,
    /// What happened and what to do next.
    pub message: String,
}

impl BootstrapError {
    /// True when the server presented an unexpected host key.
    pub fn is_host_key_mismatch(&self) -> bool {
        self.kind == FailureKind::HostKeyMismatch
    }
}
