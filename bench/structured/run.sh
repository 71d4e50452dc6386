#!/usr/bin/env bash
# Cost of constrained decoding (llguidance): decode tokens/s of dayshift-node on the CPU
# with and without a JSON schema, at N = 1 and N = 32 concurrent requests, temperature 0.8
# and 0, in one run
# (conditions alternate; each figure is the median of RUNS). SmolLM2-135M-Instruct Q4_1
# GGUF from scripts/fetch-smollm2.sh.
#   PROFILE (default release)  RUNS (default 3)  MAX_TOKENS (default 96)
# Needs: python3 with openai.
set -euo pipefail
. "$(dirname "$0")/../lib/node.sh"
cd "$(dirname "$0")/../.."
PROFILE="${PROFILE:-release}"
RUNS="${RUNS:-3}"
MAX_TOKENS="${MAX_TOKENS:-96}"
python3 -c "import openai" 2>/dev/null || { echo "bench/structured: needs the python package openai" >&2; exit 1; }
MODEL="$(bash scripts/fetch-smollm2.sh)"
cargo build --profile "$PROFILE" -q -p dayshift-node
dir="$PROFILE"; [ "$PROFILE" = dev ] && dir=debug
BIN="${CARGO_TARGET_DIR:-target}/$dir/dayshift-node"
node_work
node_cpu_config "$work/node.toml" smollm2 "$MODEL" "max_running_sequences = 32"
"$BIN" serve --config "$work/node.toml" 2> "$work/node.log" &
node_pid=$!
addr="$(node_addr "$work/node.log" "$node_pid")" || exit 1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); profile $PROFILE"
python3 bench/structured/bench.py "http://$addr/v1" "$RUNS" "$MAX_TOKENS"
