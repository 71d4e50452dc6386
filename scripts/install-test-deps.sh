#!/usr/bin/env bash
# Installs, idempotently, the tools that the test suite needs on a fresh machine.
# Each piece lives in scripts/deps/*.sh (one file per tool family), run in name order.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in scripts/deps/*.sh; do
  [ -e "$f" ] || continue
  echo "== install-test-deps: $f"
  bash "$f"
done
