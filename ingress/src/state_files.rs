//! Where the ingress keeps its files in the state directory (one place, so the server,
//! the scheduler and the CLI agree on the layout).

use std::path::{Path, PathBuf};

/// Paths of the self-signed certificate and key: `<state_dir>/tls/self-signed.{crt,key}`.
pub fn self_signed_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("tls");
    (dir.join("self-signed.crt"), dir.join("self-signed.key"))
}
