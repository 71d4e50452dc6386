#!/usr/bin/env bash
# One device call for issue 17's last figure (qwen05 batch 1): drives the node at batch
# 1 on TUNE_MODEL (qwen05) at each static-step setting of CANDIDATES, then runs the whole
# benchmark (bench/gpu/run.sh qwen05 llama1b, with its greedy checks) at the fastest,
# then checks the head-size-128 models' greedy tokens against transformers (f32, the
# node's default step: RoPE inside the attention kernel, q/k norms for Qwen3).
#   OUT=/dir [CANDIDATES="default default+u2 ..."] [TUNE_MODEL=qwen05] [HD128="llama8b2l qwen3_8b2l"] \
#     bash bench/gpu/tune_run.sh
#   (carry .gpu/bin/dayshift-node.xz and .gpu/tiny)
# Writes $OUT/tune.txt (setting, batch-1 decode tok/s of two 256-token streams one after
# the other, the step's kernel count), $OUT/table.md and $OUT/bench.tgz (run.sh's), and
# $OUT/hd128.txt.
# Settings are DAYSHIFT_BENCH_STATIC_STEP values (gpu-node/src/model/static_step.rs); the
# chosen one is passed to run.sh, which lists it in device.txt.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
here=$(cd "$(dirname "$0")" && pwd)
F=${OUT:?set OUT to the folder that comes back}
CANDIDATES=${CANDIDATES:-default default+u2 default+ks default+n4 default+u2+ks default+u2+ks+n4}
TM=${TUNE_MODEL:-qwen05}
B=${BIN:-$PWD/.gpu/bin/dayshift-node}
if [ ! -x "$B" ] && [ -f "$B.xz" ]; then xz -dc "$B.xz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
export BIN=$B
M=/tmp/models
python3 "$here/make_models.py" $M qwen05 llama1b > /dev/null 2>&1
. "$here/node.sh"
vocab=$(python3 -c "import json; print(json.load(open('$M/$TM/config.json'))['vocab_size'])")
: > "$F/tune.txt"
for s in $CANDIDATES; do
  if DAYSHIFT_BENCH_STATIC_STEP=$s node_up tune "$TM" "$M/$TM" 18300 cuda bf16 "/tmp/tune-$s.log"; then
    python3 "$here/drive.py" http://127.0.0.1:18300 "$TM" --vocab "$vocab" --clients 1,1 \
      --prompt 128 --out 256 --pid "$NODE_PID" > "/tmp/tune-$s.jsonl"
    node_down tune > /dev/null
    tps=$(python3 -c "import json,sys; print(max(json.loads(l)['decode_tokens_per_s_total'] for l in open(sys.argv[1]) if l.startswith('{')))" "/tmp/tune-$s.jsonl")
    k=$(grep -o 'rows=1 kernels=[0-9]*' "/tmp/tune-$s.log" | head -1)
    echo "$s $tps $k" | tee -a "$F/tune.txt"
  else
    echo "$s failed: $(tail -3 "/tmp/tune-$s.log" | tr '\n' ' ')" | tee -a "$F/tune.txt"
  fi
done
best=$(grep -E '^[^ ]+ [0-9.]+ ' "$F/tune.txt" | sort -k2 -nr | head -1 | cut -d' ' -f1)
echo "fastest: ${best:-none}" | tee -a "$F/tune.txt"
DAYSHIFT_BENCH_STATIC_STEP=${best:-default} RES=/tmp/bench-out OUT=$F bash "$here/run.sh" qwen05 llama1b \
  > "$F/run.txt" 2>&1
grep -A4 "^| N |" "$F/table.md" | head -20
grep "bandwidth limit\|greedy\|check" "$F/table.md" | head -10
# The head-size-128 decode attention with RoPE inside (the default), against transformers.
: > "$F/hd128.txt"
for m in ${HD128-llama8b2l qwen3_8b2l}; do
  python3 "$here/make_models.py" $M "$m" > /dev/null 2>&1
  if node_up "c$m" "$m" "$M/$m" 18310 cuda f32 "/tmp/check-$m.log"; then
    python3 "$here/correctness.py" hf "$M/$m" http://127.0.0.1:18310 "$m" 2>&1 | tail -3 | tee -a "$F/hd128.txt"
    grep -o 'rows=1 kernels=[0-9]*' "/tmp/check-$m.log" | head -1 | tee -a "$F/hd128.txt"
    node_down "c$m" > /dev/null
  else
    echo "$m: node failed: $(tail -3 "/tmp/check-$m.log" | tr '\n' ' ')" | tee -a "$F/hd128.txt"
  fi
done
