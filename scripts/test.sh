#!/usr/bin/env bash
# The test command (README; .ci/run is exactly this): checks formatting, installs the
# tools the tests need, builds with clippy's lints as errors, runs every test with
# cargo-nextest (one process per test, in parallel: .config/nextest.toml), then runs the
# README's snippets against the quickstart (scripts/check-readme.py) with the binaries
# this build made. Stops the test PostgreSQL server at the end if it started it.
# Method and figures: tests/README.md ("Running the suite").
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT="${DAYSHIFT_TEST_PG_PORT:-55432}"
pg_was_running=0
if (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then pg_was_running=1; fi
stop_pg() {
  if [ "$pg_was_running" = 0 ]; then bash scripts/deps/postgres.sh stop || true; fi
}
trap stop_pg EXIT
phase() { printf '== test.sh: %s (%s s)\n' "$1" "$SECONDS" >&2; }

phase "checking the formatting (cargo fmt --check)"
cargo fmt --all -- --check
phase "installing test dependencies"
bash scripts/install-test-deps.sh   # cargo-nextest too: scripts/deps/nextest.sh

# Lints in the test build itself: clippy-driver compiles the workspace's own crates
# (RUSTC_WORKSPACE_WRAPPER; dependencies are compiled by rustc as usual) and its lints are
# errors (CLIPPY_ARGS is how `cargo clippy -- -D warnings` passes them to the driver). The
# same lints as `cargo clippy --workspace --all-targets -- -D warnings`, without
# `cargo clippy`'s second, check-mode compile of every dependency (its check build was
# 384-503 s of a cold run: tests/README.md, "Suite figures"). After this, `cargo build`
# without the wrapper compiles the workspace's crates once more (it is part of their
# fingerprint).
if ! command -v clippy-driver >/dev/null; then
  echo "test.sh: clippy-driver not found: install clippy (rustup component add clippy)" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
phase "building the examples with clippy's lints (the rest is built by nextest below)"
cargo build --workspace --examples
# --tests: the targets with `test = true`: unit tests of the libraries that have them and
# the integration tests (binaries and harness: test = false); with the examples above,
# every target `cargo clippy --all-targets` would check (there are no benches in Rust).
# Two phases: everything but `chaos_serve` in parallel, the long tests first
# (.config/nextest.toml priorities; `e2e_office_day` mostly waits for its window's times);
# then `chaos_serve` alone: its SIGKILLs, faults and 12 pools' bootstraps starve the
# others' time bounds when run beside them (tests/README.md, "Suite figures").
ALONE='package(dayshift-tests) & test(/^chaos_serve::/)'
phase "building and running the tests (all but chaos_serve, in parallel)"
cargo nextest run --workspace --tests -E "not ($ALONE)"
phase "chaos_serve, alone"
cargo nextest run --workspace --tests -E "$ALONE" --test-threads 1
phase "checking the README's snippets"
DAYSHIFT_BIN_DIR="$PWD/target/debug" python3 scripts/check-readme.py
phase "done"
