#!/usr/bin/env bash
# Quantized GGUF on the GPU (issue 18), one run on the GPU machine: makes a random-weight
# model of a real shape (bench/gpu/make_models.py, bf16), gives it the test model's
# byte-level BPE tokenizer (the ids beyond it are placeholders; prompts are token ids),
# writes GGUF files with `dayshift-node quantize` there, and drives the node on CUDA with
# N streaming clients (bench/gpu/drive.py) for the bf16 safetensors directory and each
# GGUF file; prints the D2D bandwidth so each line can be set against its own weight
# bytes' limit. Every node starts with the driver's JIT cache off (CUDA_CACHE_DISABLE=1,
# a freshly rented server): its "engine warmed up" line is the fresh-server warm-up.
#
#   BIN=.gpu/bin/dayshift-node TINY=.gpu/tiny bash bench/gguf-gpu/run.sh
#
# env (defaults):
#   MODEL (llama1b)        a make_models.py shape: llama1b, qwen3_8b, nemo12b, ...
#   TYPES ("q4_k_m q8_0")  quantize types, each a GGUF file
#   GGUF_DTYPES ("")       the node's dtype for the GGUF runs, e.g. "f32 bf16" (empty: the
#                          default, f32)
#   BF16 (1)               also drive the bf16 safetensors directory
#   CLIENTS (1,8,32) PROMPT (128) OUTLEN (128) SLOTS (64) SLOT_TOKENS (512)
# Results: $OUT (the device tool's folder) or /tmp/gguf-gpu-out: one JSON line per
# (model, N) in node.jsonl (with "weights" and "dtype"), the quantize summaries in
# quantize.jsonl, bandwidth.json, and each node's log.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
here=$(cd "$(dirname "$0")" && pwd)
gpu="$here/../gpu"
R=${OUT:-/tmp/gguf-gpu-out}; mkdir -p "$R"
B=${BIN:-$PWD/.gpu/bin/dayshift-node}
if [ -f "$B.xz" ] && [ ! -x "$B" ]; then xz -dc "$B.xz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
TINY=${TINY:-$PWD/.gpu/tiny}
MODEL=${MODEL:-llama1b}
CLIENTS=${CLIENTS:-1,8,32}; PROMPT=${PROMPT:-128}; OUTLEN=${OUTLEN:-128}
TYPES=${TYPES-q4_k_m q8_0}; GGUF_DTYPES=${GGUF_DTYPES:-default}; BF16=${BF16:-1}
export SLOTS=${SLOTS:-64}
M=/tmp/gguf-models
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  env | grep '^DAYSHIFT_BENCH_' | sort | sed 's/^/bench switch: /'; } | tee -a "$R/device.txt"
python3 "$gpu/make_models.py" $M "$MODEL" | tee -a "$R/models.jsonl" || exit 1
vocab=$(python3 -c "import json; print(json.load(open('$M/$MODEL/config.json'))['vocab_size'])")
# The GGUF files get the test model's byte-level BPE tokenizer (quantize writes only
# those); the bf16 directory keeps make_models.py's word-level one, whose every id decodes.
q=$M/$MODEL-q
if [ -n "$TYPES" ]; then
  rm -rf "$q" && mkdir -p "$q"
  for f in $M/$MODEL/*; do ln -s "$f" "$q/"; done
  rm -f "$q/tokenizer.json" "$q/tokenizer_config.json"
  cp "$TINY/tokenizer.json" "$TINY/tokenizer_config.json" "$q/"
fi
[ -f "$R/bandwidth.json" ] || python3 "$gpu/hf_baseline.py" bandwidth --json "$R/bandwidth.json" > /dev/null
cat "$R/bandwidth.json"; echo
for t in $TYPES; do
  /usr/bin/time -f "quantize $MODEL $t: %e s wall, %M KB peak RSS" \
    "$B" quantize "$q" -t "$t" --json 2>> "$R/quantize.log" | tee -a "$R/quantize.jsonl"
done
[ -n "$TYPES" ] && tail -3 "$R/quantize.log"

port=18200
. "$gpu/node.sh"
drive() { # label path dtype ("" = the model's own / the node's default)
  local label=$MODEL-$1
  if COLD=1 node_up "$label" "$label" "$2" "$port" cuda "$3" "$R/$label-node.log"; then
    python3 "$gpu/drive.py" http://127.0.0.1:$port "$label" --vocab $((vocab < 128000 ? vocab : 128000)) \
      --clients $CLIENTS --prompt $PROMPT --out $OUTLEN --pid $NODE_PID \
      | sed "s/^{/{\"model\": \"$MODEL\", \"weights\": \"${1%%-*}\", \"dtype\": \"${3:-default}\", /" \
      | tee -a "$R/node.jsonl"
    grep -h "warmed up\|captured\|cannot capture\|KV cache allocated\|matmul checked\|memory model" "$R/$label-node.log" | sed "s/\x1b\[[0-9;]*m//g" | cut -c1-400
    node_down "$label"
  fi
  port=$((port + 1))
}
[ "$BF16" = 1 ] && drive bf16 $M/$MODEL bf16
for t in $TYPES; do
  T=$(echo "$t" | tr a-z A-Z)
  for d in $GGUF_DTYPES; do
    [ "$d" = default ] && d=""
    drive "$t${d:+-$d}" "$q.$T.gguf" "$d"
  done
  rm -f "$q.$T.gguf"
done
rm -rf "$M/$MODEL" "$q"
grep -h "GGUF\|quantiz\|error\|ERROR\|panick" "$R"/*-node.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | head -20
