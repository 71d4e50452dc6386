//! Our own binaries for end-to-end tests of any crate: `dayshift`, `dayshift-node`, …
//! found next to the running test's profile folder (`target/<profile>/`), built with
//! cargo when they are not there yet (cargo builds a package's binaries only for that
//! package's own tests).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of workspace binary `bin` of package `package`, built if missing.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps")
        .to_path_buf();
    let path = profile_dir.join(bin);
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", bin]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let st = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap_or_else(|e| panic!("cargo build -p {package}: {e}"));
        assert!(st.success(), "cargo build -p {package} --bin {bin} failed");
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// `dayshift-node`.
pub fn node_bin() -> PathBuf {
    workspace_bin("dayshift-node", "dayshift-node")
}

/// `dayshift-node` without its symbols and line tables (`strip --strip-all`, like the
/// release binaries operators ship): what the SSH end-to-end tests upload to every test
/// host. Half the bytes of the debug build (~28 of ~55 MB), so half the SFTP, sha256 and
/// disk work per bootstrap; `chaos_serve` uploads it to 70-130 hosts. Made once per
/// build next to it (`dayshift-node.stripped`, rewritten when the binary is newer) and
/// published by a rename, so tests running at once never see half a file.
pub fn node_bin_stripped() -> PathBuf {
    let full = node_bin();
    let out = full.with_file_name("dayshift-node.stripped");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&out).is_some_and(|o| modified(&full).is_some_and(|f| o >= f)) {
        return out;
    }
    let tmp = full.with_file_name(format!("dayshift-node.stripped.{}", std::process::id()));
    let st = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&tmp)
        .arg(&full)
        .status();
    match st {
        Ok(st) if st.success() => {
            std::fs::rename(&tmp, &out).expect("publishing the stripped dayshift-node");
            out
        }
        // No binutils `strip` (it comes with the C linker on Linux): the same tests with
        // the whole binary, only slower.
        other => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!(
                "strip --strip-all {} did not work ({other:?}): uploading the unstripped binary",
                full.display()
            );
            full
        }
    }
}

/// `dayshift` (the ingress and operator CLI).
pub fn dayshift_bin() -> PathBuf {
    workspace_bin("dayshift", "dayshift")
}

/// Sends `sig` to `pid` (a process the test started).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid the test owns; no memory is touched.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// True while process `pid` exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}
