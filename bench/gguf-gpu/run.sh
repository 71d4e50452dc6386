#!/usr/bin/env bash
# Quantized GGUF on the GPU (issue 18, item 1), one run on the GPU machine: makes a
# random-weight model of Llama-3.2-1B's shape (bench/gpu/make_models.py, bf16), gives it
# the test model's byte-level BPE tokenizer (the ids beyond it are placeholders; prompts
# are token ids), writes Q4_K_M and Q8_0 GGUF files with `dayshift-node quantize` there,
# and drives the node on CUDA with N streaming clients (bench/gpu/drive.py) for the bf16
# safetensors directory and each GGUF file; prints the D2D bandwidth so each line can be
# set against its own weight bytes' limit.
#
#   BIN=.gpu/bin/dayshift-node TINY=.gpu/tiny bash bench/gguf-gpu/run.sh
#   (CLIENTS default 1,8,32; PROMPT 128; OUTLEN 128; TYPES default "q4_k_m q8_0")
# Results: $OUT (the device tool's folder) or /tmp/gguf-gpu-out: one JSON line per
# (model, N) in node.jsonl, the quantize summaries in quantize.jsonl, bandwidth.json.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
here=$(cd "$(dirname "$0")" && pwd)
gpu="$here/../gpu"
R=${OUT:-/tmp/gguf-gpu-out}; mkdir -p "$R"
B=${BIN:-$PWD/.gpu/bin/dayshift-node}
if [ -f "$B.xz" ] && [ ! -x "$B" ]; then xz -dc "$B.xz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
TINY=${TINY:-$PWD/.gpu/tiny}
CLIENTS=${CLIENTS:-1,8,32}; PROMPT=${PROMPT:-128}; OUTLEN=${OUTLEN:-128}
TYPES=${TYPES:-q4_k_m q8_0}
M=/tmp/gguf-models
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$R/device.txt"
python3 "$gpu/make_models.py" $M llama1b > /dev/null || exit 1
# The GGUF files get the test model's byte-level BPE tokenizer (quantize writes only
# those); the bf16 directory keeps make_models.py's word-level one, whose every id decodes.
rm -rf $M/llama1b-q && cp -r $M/llama1b $M/llama1b-q
cp "$TINY/tokenizer.json" "$TINY/tokenizer_config.json" $M/llama1b-q/
python3 "$gpu/hf_baseline.py" bandwidth --json "$R/bandwidth.json" > /dev/null
cat "$R/bandwidth.json"; echo
for t in $TYPES; do
  /usr/bin/time -f "quantize $t: %e s wall, %M KB peak RSS" \
    "$B" quantize $M/llama1b-q -t "$t" --json 2>> "$R/quantize.log" | tee -a "$R/quantize.jsonl"
done
tail -3 "$R/quantize.log"

port=18200
. "$gpu/node.sh"
serve() { # name path [dtype]
  SLOTS=64 node_up "$1" "$1" "$2" "$port" cuda "${3:-}" "$R/$1-node.log"
  pid=$NODE_PID
}
drive() { # name path [dtype]
  if serve "$@"; then
    python3 "$gpu/drive.py" http://127.0.0.1:$port "$1" --vocab 128000 --clients $CLIENTS \
      --prompt $PROMPT --out $OUTLEN --pid $pid | sed "s/^{/{\"model\": \"$1\", /" | tee -a "$R/node.jsonl"
    kill -TERM $pid; wait $pid
  fi
  port=$((port + 1))
}
drive bf16 $M/llama1b bf16
for t in $TYPES; do
  T=$(echo "$t" | tr a-z A-Z)
  drive "$t" "$M/llama1b-q.$T.gguf"
done
grep -h "GGUF\|quantiz\|error\|ERROR" "$R"/*-node.log | head -20
