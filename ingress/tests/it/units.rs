//! Tests of small functions of the `dayshift` library. The library has `test = false`
//! (its unit-test build recompiled the whole crate for four tests), so they live here,
//! and [`no_unit_tests_hide_in_src`] makes sure no `#[cfg(test)]` test is added to
//! `src/` where it would silently never run.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use dayshift::cli::nodes::age;
use dayshift::cli::stored::{redact, sqlite_file};
use dayshift::server::mirror::{compute_manifest, file_path, list_files};
use sha2::{Digest, Sha256};

#[test]
fn a_single_file_is_a_one_file_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("SmolLM2.Q4_1.gguf");
    std::fs::write(&f, b"GGUF-bytes").unwrap();
    let stamp = list_files(&f).unwrap();
    assert_eq!(stamp.len(), 1);
    assert_eq!(stamp[0].0, "SmolLM2.Q4_1.gguf");
    let m = compute_manifest("smol", &f, &stamp).unwrap();
    assert_eq!(m.files[0].path, "SmolLM2.Q4_1.gguf");
    assert_eq!(m.files[0].size, 10);
    assert_eq!(
        m.files[0].sha256,
        hex::encode(Sha256::digest(b"GGUF-bytes"))
    );
    assert_eq!(file_path(&f, "SmolLM2.Q4_1.gguf"), f);
    assert_eq!(file_path(dir.path(), "a/b"), dir.path().join("a/b"));
}

#[test]
fn ages_read_well() {
    let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
    let ms = |s: i64| (1_000_000 - s) * 1000;
    assert_eq!(age(now, ms(40)), "40s");
    assert_eq!(age(now, ms(7 * 60 + 12)), "7m 12s");
    assert_eq!(age(now, ms(2 * 3600 + 5 * 60)), "2h 05m");
    assert_eq!(age(now, ms(3 * 86_400 + 4 * 3600 + 59)), "3d 4h");
    assert_eq!(age(now, ms(-5)), "0s");
}

#[test]
fn sqlite_urls_name_their_file() {
    assert_eq!(
        sqlite_file("sqlite:///var/lib/dayshift/dayshift.db?mode=rwc"),
        Some(PathBuf::from("/var/lib/dayshift/dayshift.db"))
    );
    assert_eq!(sqlite_file("sqlite::memory:"), None);
    assert_eq!(sqlite_file("postgres://u:p@h/db"), None);
}

#[test]
fn passwords_are_not_printed() {
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_unit_tests_hide_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let marker = ["#[cfg(", "test)]"].concat();
    let hidden: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(&marker))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        hidden.is_empty(),
        "ingress/Cargo.toml has `[lib] test = false`, so these unit tests would never run: \
         move them to ingress/tests/it/ (or set test = true): {hidden:?}"
    );
}
