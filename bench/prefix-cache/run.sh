#!/usr/bin/env bash
# Time to first token of a chat's later turns with the node's prefix cache on and off
# (`[engine] prefix_cache`), in one run on this machine's CPU: the embedded default model
# (SmolLM2-135M-Instruct Q4_1), a conversation of TURNS turns whose every user message
# is ~WORDS words and whose assistant answers are the node's own (ANSWER tokens, greedy),
# each turn sent as an app sends it: the whole conversation so far.
#   bash bench/prefix-cache/run.sh            TURNS (default 6), WORDS (150), ANSWER (48)
#   MODEL=path.gguf                           another GGUF model
# Prints per turn the prompt's tokens, the cached ones and the time to the first
# streamed token, then the ratio of the sums (off / on).
set -euo pipefail
. "$(dirname "$0")/../lib/node.sh"
cd "$(dirname "$0")/../.."
MODEL="${MODEL:-$(bash scripts/fetch-smollm2.sh)}"
cargo build --release -q -p dayshift-node
BIN="${CARGO_TARGET_DIR:-target}/release/dayshift-node"
node_work
for cache in false true; do
  node_cpu_config "$work/node.toml" m "$MODEL" "prefix_cache = $cache"
  "$BIN" serve --config "$work/node.toml" 2> "$work/node-$cache.log" &
  node_pid=$!
  addr="$(node_addr "$work/node-$cache.log" "$node_pid")" || exit 1
  python3 bench/prefix-cache/bench.py "http://$addr" "$cache" "${TURNS:-6}" "${WORDS:-150}" \
    "${ANSWER:-48}" | tee "$work/out-$cache.txt"
  kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""
done
python3 - "$work/out-false.txt" "$work/out-true.txt" <<'PY'
import sys
def total(p):
    return float([l for l in open(p) if l.startswith("sum")][0].split()[-2])
off, on = total(sys.argv[1]), total(sys.argv[2])
print(f"turns 2..: time to first token summed, cache off {off:.2f} s, on {on:.2f} s: {off / on:.2f}x")
PY
