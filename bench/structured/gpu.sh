#!/usr/bin/env bash
# The constrained-decoding benchmark on a GPU machine (run there; see gpu-node/README.md,
# "Cost of constrained decoding"): the CUDA dayshift-node serves random-weight Llamas with
# SmolLM2's real tokenizer, one of SmolLM2-135M's shape and one of Llama-3.2-1B's layer
# shape, and bench.py measures decode tokens/s with and without a JSON schema at N = 1
# and N = 32, as run.sh does on the CPU.
#   NODE=path/to/dayshift-node[.xz] TOK=tokenizer-dir [RUNS=3] [MAX_TOKENS=96] \
#     [CLIENT_PYTHONPATH=dir-with-openai] bash bench/structured/gpu.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib/node.sh"
RUNS="${RUNS:-3}"
MAX_TOKENS="${MAX_TOKENS:-96}"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -n "${CLIENT_PYTHONPATH:-}" ] && export PYTHONPATH="$CLIENT_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}"
work="$(mktemp -d)"
node_pid=""
cleanup() { [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if [[ "$NODE" == *.xz ]]; then
  python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$NODE" "$work/dayshift-node"
else cp "$NODE" "$work/dayshift-node"; fi
chmod +x "$work/dayshift-node"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for shape in smollm2 1b; do
  python3 "$here/make_model.py" "$TOK" "$work/$shape" "$shape"
done
cat > "$work/node.toml" <<TOML
node_id = "bench"
listen = "127.0.0.1:0"
[tls]
mode = "off"
[engine]
device = "cuda"
max_running_sequences = 32
[[models]]
name = "smollm2"
source = { type = "local", path = "$work/smollm2" }
[[models]]
name = "1b"
source = { type = "local", path = "$work/1b" }
TOML
"$work/dayshift-node" serve --config "$work/node.toml" 2> "$work/node.log" &
node_pid=$!
addr="$(node_addr "$work/node.log" "$node_pid")" || exit 1
for m in smollm2 1b; do
  echo "model $m (random weights, SmolLM2 tokenizer, bf16)"
  python3 "$here/bench.py" "http://$addr/v1" "$RUNS" "$MAX_TOKENS" "$m"
done
grep -E "warmed|ERROR|WARN" "$work/node.log" | tail -5 || true
