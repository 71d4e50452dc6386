#!/usr/bin/env bash
# Installs the Python packages of the ingress gateway tests: the official `openai`
# client, `jsonschema` (structured-output checks) and `langchain-openai` (an agent
# framework's tool loop against the ingress). Idempotent: quick when they import.
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c 'import openai, jsonschema, langchain_openai' >/dev/null 2>&1; then
  echo "openai $("$PY" -c 'import openai; print(openai.__version__)'), jsonschema and langchain-openai already installed"
  exit 0
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends python3-pip
fi
PKGS="openai jsonschema langchain-openai"
"$PY" -m pip install --quiet $PKGS 2>/dev/null || "$PY" -m pip install --quiet --break-system-packages $PKGS
"$PY" -c 'import openai, langchain_openai; print("openai", openai.__version__, "langchain-openai ok")'
