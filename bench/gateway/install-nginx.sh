#!/usr/bin/env bash
# Installs nginx and wrk (Debian packages) for the gateway benchmark (bench/gateway/run.sh;
# not part of the test dependencies).
# Nothing is started here: the benchmark runs its own nginx with its own config.
# Idempotent.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] || ! command -v wrk >/dev/null 2>&1; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends nginx-light wrk || \
    $SUDO apt-get install -y --no-install-recommends nginx wrk
fi
# The package may start a system nginx on port 80; the benchmark does not need it.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
fi
if [ -f /run/nginx.pid ]; then
  $SUDO kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi
echo "nginx: $(/usr/sbin/nginx -v 2>&1); wrk: $(command -v wrk)"
