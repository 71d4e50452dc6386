#!/usr/bin/env bash
# The test command (README): installs the tools the tests need, runs every test with
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

phase "installing test dependencies"
bash scripts/install-test-deps.sh   # cargo-nextest too: scripts/deps/nextest.sh
# --tests: the targets with `test = true`: unit tests of the libraries that have them and
# the integration tests (binaries and harness: test = false); examples and benches are
# compiled by `cargo clippy --all-targets` in .ci/run, not linked again here.
# One phase: the whole-system tests (chaos_serve, e2e_office_day) and the other long ones
# start first and run beside the rest (.config/nextest.toml: priorities, serve-system
# group). Two phases (the whole-system pair after the rest, alone) took 417 s against
# 220-306 s here; tests/README.md, "Suite figures".
phase "building and running the tests"
cargo nextest run --workspace --tests
phase "checking the README's snippets"
DAYSHIFT_BIN_DIR="$PWD/target/debug" python3 scripts/check-readme.py
phase "done"
