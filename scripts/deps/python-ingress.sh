#!/usr/bin/env bash
# Installs the official `openai` Python client for the ingress gateway tests.
# Idempotent: quick when it imports already.
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c 'import openai' >/dev/null 2>&1; then
  echo "openai $("$PY" -c 'import openai; print(openai.__version__)') already installed"
  exit 0
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends python3-pip
fi
"$PY" -m pip install --quiet openai 2>/dev/null || "$PY" -m pip install --quiet --break-system-packages openai
"$PY" -c 'import openai; print("openai", openai.__version__)'
