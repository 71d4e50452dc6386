#!/usr/bin/env bash
# CPU decode tokens/s and long-prompt time to first token of dayshift-node beside llama.cpp
# (llama-cpp-python) on this machine, one run:
# SmolLM2-135M-Instruct Q4_1 GGUF, same threads, same prompt and length, greedy.
#   THREADS (default: all cores)  RUNS (default 3)  MAX_TOKENS (default 128)
#   PROMPT_WORDS (default 2300: a ~3,000-token prompt for the time-to-first-token part)
#   MODEL (default: that file; e.g. a Q8_0 or Q4_K_M copy made by
#   `dayshift-node quantize SmolLM2-135M-Instruct.Q4_1.gguf -t q8_0`)
# Needs: python3 with openai and llama-cpp-python (pip install llama-cpp-python: builds
# llama.cpp from source, several minutes); the model comes from scripts/fetch-smollm2.sh.
set -euo pipefail
. "$(dirname "$0")/../lib/node.sh"
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-$(nproc)}"
RUNS="${RUNS:-3}"
MAX_TOKENS="${MAX_TOKENS:-128}"
python3 -c "import llama_cpp, openai" 2>/dev/null || {
  echo "bench/gguf-cpu: needs python packages llama-cpp-python and openai: pip install llama-cpp-python openai" >&2
  exit 1
}
MODEL="${MODEL:-$(bash scripts/fetch-smollm2.sh)}"
cargo build --release -q -p dayshift-node
BIN="${CARGO_TARGET_DIR:-target}/release/dayshift-node"
node_work
# every prompt prefilled whole, as llama.cpp's (its cache is reset before each prompt)
node_cpu_config "$work/node.toml" smollm2 "$MODEL" "prefix_cache = false"
RAYON_NUM_THREADS="$THREADS" "$BIN" serve --config "$work/node.toml" 2> "$work/node.log" &
node_pid=$!
addr="$(node_addr "$work/node.log" "$node_pid")" || exit 1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
python3 bench/gguf-cpu/bench.py "http://$addr/v1" "$MODEL" "$THREADS" "$RUNS" "$MAX_TOKENS" "${PROMPT_WORDS:-2300}"
