#!/usr/bin/env bash
# The fused decode step's row limit (gpu-node FUSED_DECODE_MAX_ROWS), compared in one run
# on the GPU machine: makes the random-weight models (make_models.py), then for each limit
# in ROWS drives every model with DAYSHIFT_BENCH_FUSED_ROWS set to it at CLIENTS
# streams (bench/gpu/drive.py), and with CHECK=1 runs the greedy check of the first
# model in f32 against transformers (8 prompts decoded as one batch of 8 rows) at the
# largest limit.
#
#   ROWS="2 8" CLIENTS=1,2,4,8 bash bench/gpu/fused_rows.sh [models...]   (default qwen05 llama1b)
#
# Results: $OUT (the device tool's folder) or /tmp/fused-rows: node_<model>_rows<R>.jsonl,
# check_<model>_rows<R>.json and the node logs, packed into fused_rows.tgz.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
R=/tmp/fused-rows; mkdir -p "$R"
FINAL=${OUT:-}
B=${BIN:-$PWD/.gpu/bin/dayshift-node}
if [ ! -x "$B" ] && [ -f "$B.xz" ]; then xz -dc "$B.xz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
MODELS=${*:-qwen05 llama1b}
ROWS=${ROWS:-2 8}; CLIENTS=${CLIENTS:-1,2,4,8}; CHECK=${CHECK:-1}
PROMPT=${PROMPT:-128}; OUTLEN=${OUTLEN:-128}
M=/tmp/models
. "$here/node.sh"
python3 "$here/make_models.py" $M $MODELS > "$R/models.jsonl"
for rows in $ROWS; do
  export DAYSHIFT_BENCH_FUSED_ROWS=$rows
  for m in $MODELS; do
    vocab=$(python3 -c "import json; print(json.load(open('$M/$m/config.json'))['vocab_size'])")
    if node_up $m $m $M/$m 18100 cuda bf16 "$R/$m-rows$rows-node.log"; then
      python3 "$here/drive.py" http://127.0.0.1:18100 $m --vocab $vocab --clients $CLIENTS \
        --prompt $PROMPT --out $OUTLEN --pid "$(cat /tmp/$m.pid)" | tee "$R/node_${m}_rows$rows.jsonl"
      node_down $m
    fi
  done
done
first=${MODELS%% *}; last=${ROWS##* }
if [ "$CHECK" = 1 ]; then
  export DAYSHIFT_BENCH_FUSED_ROWS=$last
  if node_up chk $first $M/$first 18103 cuda f32 "$R/$first-f32-rows$last-node.log"; then
    python3 "$here/correctness.py" hf $M/$first http://127.0.0.1:18103 $first \
      | tee "$R/check_${first}_rows$last.json"
    node_down chk
  fi
fi
if [ -n "$FINAL" ]; then tar -czf "$FINAL/fused_rows.tgz" -C "$R" .; fi
