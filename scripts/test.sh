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
# Two phases: everything but the whole-system tests (chaos_serve, e2e_office_day) in
# parallel, the long ones first (.config/nextest.toml priorities); then those two alone,
# one at a time. One phase with all of them together took 186-306 s in five runs but 420 s
# in a sixth, with the chat-API test 60 s from nextest's kill time (tests/README.md,
# "Suite figures"): two phases are slower on average and do not starve.
SYSTEM='package(dayshift-tests) & test(/^(chaos_serve|e2e_office_day)::/)'
phase "building and running the tests (all but the whole-system ones, in parallel)"
cargo nextest run --workspace --tests -E "not ($SYSTEM)"
phase "the whole-system tests, alone"
cargo nextest run --workspace --tests -E "$SYSTEM" --test-threads 1
phase "checking the README's snippets"
DAYSHIFT_BIN_DIR="$PWD/target/debug" python3 scripts/check-readme.py
phase "done"
