#!/usr/bin/env bash
# Installs, idempotently, the tools that the test suite needs on a fresh machine.
set -euo pipefail
echo "install-test-deps: nothing to install yet"
