#!/usr/bin/env bash
# The GPU benchmark of dayshift-node, in one run on the GPU machine (see ../shared/GPU.md
# and bench/gpu/README.md): makes random-weight models (transformers from_config), measures
# the D2D copy bandwidth and transformers' generate (batch 1 and batched) on the same
# weights, drives the node with N = 1, 8, 32, 128 streaming clients per model, runs the
# greedy correctness checks, and writes the table.
#
#   BENCH=.gpu/bench bash .gpu/bench/run.sh [models...]       # default: qwen05 llama1b
#
# Expects $BIN (default .gpu/bin/dayshift-node, or that name + .xz: a stripped release
# build with --features cuda, scripts/build-cuda-node.sh) and .gpu/tiny (from
# `dayshift-node make-test-model`).
# The first node of each model starts with the driver's JIT cache off
# (CUDA_CACHE_DISABLE=1), as on a freshly rented server, so its "engine warmed up" line
# is the fresh-server warm-up; the later ones (eager, checks) use the cache.
# Decode runs with CUDA graphs (the default); EAGER_CLIENTS (default 1,8,32; empty: none)
# drives each model again with `cuda_graphs = false` for the comparison.
# Results go to $RES (default /tmp/bench-out), packed at the end into $OUT/bench.tgz with
# $OUT/table.md beside it (the device tool returns few files).
# PROMPT/OUTLEN/CLIENTS/HF_BATCHES/CHECKS/EAGER_CLIENTS override the defaults. The node
# inherits the environment: DAYSHIFT_BENCH_* switches (e.g. DAYSHIFT_BENCH_STATIC_STEP,
# DAYSHIFT_BENCH_L2_PREFETCH_MIB) apply to it and are listed in device.txt.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
here=$(cd "$(dirname "$0")" && pwd)
FINAL=${OUT:-}
OUT=${RES:-/tmp/bench-out}; mkdir -p "$OUT"
B=${BIN:-$PWD/.gpu/bin/dayshift-node}
if [ ! -x "$B" ] && [ -f "$B.xz" ]; then xz -dc "$B.xz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
MODELS=${*:-qwen05 llama1b}
PROMPT=${PROMPT:-128}; OUTLEN=${OUTLEN:-128}; CLIENTS=${CLIENTS:-1,2,4,8,32,128}
HF_BATCHES=${HF_BATCHES:-1,8,32,128}; CHECKS=${CHECKS:-1}; EAGER_CLIENTS=${EAGER_CLIENTS-1,8,32}
M=/tmp/models
TINY=${TINY:-$PWD/.gpu/tiny}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $B --version; \
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; \
  env | grep '^DAYSHIFT_BENCH_' | sort | sed 's/^/bench switch: /'; } \
  | tee "$OUT/device.txt"

. "$here/node.sh"
serve() { # key model-name dir port dtype device [cuda_graphs]
  local tag=""
  [ "${7:-true}" = false ] && tag="-eager"
  node_up "$1" "$2" "$3" "$4" "$6" "$5" "$OUT/$2-$6-$5$tag-node.log" "${7:-true}"
}
stop() { node_down "$1"; }

python3 "$here/make_models.py" $M $MODELS | tee "$OUT/models.jsonl"
python3 "$here/hf_baseline.py" bandwidth --json "$OUT/bandwidth.json"

for m in $MODELS; do
  vocab=$(python3 -c "import json; print(json.load(open('$M/$m/config.json'))['vocab_size'])")
  python3 "$here/hf_baseline.py" generate $M/$m --batches $HF_BATCHES --prompt $PROMPT --out $OUTLEN \
    --json "$OUT/hf_$m.json" > /dev/null
  if COLD=1 serve $m $m $M/$m 18100 bf16 cuda; then
    python3 "$here/drive.py" http://127.0.0.1:18100 $m --vocab $vocab --clients $CLIENTS \
      --prompt $PROMPT --out $OUTLEN --pid "$(cat /tmp/$m.pid)" | tee "$OUT/node_$m.jsonl"
    stop $m
  fi
  if [ -n "$EAGER_CLIENTS" ] && serve $m $m $M/$m 18100 bf16 cuda false; then
    python3 "$here/drive.py" http://127.0.0.1:18100 $m --vocab $vocab --clients $EAGER_CLIENTS \
      --prompt $PROMPT --out $OUTLEN --pid "$(cat /tmp/$m.pid)" | tee "$OUT/node_${m}_eager.jsonl"
    stop $m
  fi
done

if [ "$CHECKS" = 1 ]; then
  # Greedy, with CUDA graphs on and off: tiny model CPU f32 == CUDA f32; the first
  # model (qwen05) f32 CUDA == transformers f32 CUDA.
  tv=$(python3 -c "import json; print(json.load(open('$TINY/config.json'))['vocab_size'])")
  serve tiny tiny "$TINY" 18101 f32 cpu
  first=${MODELS%% *}
  for graphs in true false; do
    sfx=""; [ "$graphs" = false ] && sfx="_eager"
    if serve tinyc tiny "$TINY" 18102 f32 cuda $graphs; then
      python3 "$here/correctness.py" nodes http://127.0.0.1:18101 http://127.0.0.1:18102 tiny $tv \
        | tee "$OUT/check_tiny_cpu_vs_cuda$sfx.json"
      stop tinyc
    fi
    if serve $first $first $M/$first 18103 f32 cuda $graphs; then
      python3 "$here/correctness.py" hf $M/$first http://127.0.0.1:18103 $first \
        | tee "$OUT/check_${first}_vs_transformers$sfx.json"
      stop $first
    fi
  done
  stop tiny
fi
python3 "$here/table.py" "$OUT" $MODELS | tee "$OUT/table.md"
if [ -n "$FINAL" ]; then
  mkdir -p "$FINAL"; cp "$OUT/table.md" "$FINAL/" 2>/dev/null
  tar -czf "$FINAL/bench.tgz" -C "$OUT" .
fi
