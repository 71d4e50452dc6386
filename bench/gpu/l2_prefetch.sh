#!/usr/bin/env bash
# Does keeping the decode step's weight stream ahead in L2 lift batch 1? (issue 17: qwen05
# at 26 % of the bandwidth limit, its small GEMVs leaving DRAM idle between kernels and
# during attention; gpu-node/src/model/l2_prefetch.rs). One run on the GPU machine,
# ~4 minutes:
#   1. bench/gpu/kernels/l2_prefetch_bench.cu: a step's GEMVs alone, each kernel
#      prefetching nothing, the next GEMV's weights, or the next two GEMVs';
#   2. examples/graph_speed.rs on qwen05 and llama1b (and llama1b quantized to Q4_K at
#      load) with DAYSHIFT_BENCH_L2_PREFETCH_MIB=0 and each window in WINDOWS: µs a
#      step as the engine runs it, the GPU's busy time (DAYSHIFT_BENCH_GPU_TIMING=1), and
#      a hash of the tokens (a prefetch is a hint: the tokens must not change).
#   WINDOWS="8 16 32" [NODE=1] bash bench/gpu/l2_prefetch.sh
#     (carry .gpu/bin/graph_speed.xz; with NODE=1 also .gpu/bin/dayshift-node.xz, .gpu/tiny)
# graph_speed.xz: `cargo build --release -p dayshift-node --features cuda --example
# graph_speed` in scripts/build-cuda-node.sh's environment, stripped, `xz -6`.
# Then the node itself: DAYSHIFT_BENCH_L2_PREFETCH_MIB=N bash bench/gpu/run.sh ...
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export DAYSHIFT_BENCH_GPU_TIMING=1
here=$(cd "$(dirname "$0")" && pwd)
WINDOWS=${WINDOWS:-8 16 32}
STEPS=${STEPS:-256}
if command -v nvcc > /dev/null; then
  echo "== kernels/l2_prefetch_bench.cu"
  nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/l2pf "$here/kernels/l2_prefetch_bench.cu" && /tmp/l2pf
else
  echo "== no nvcc here: kernels/l2_prefetch_bench.cu skipped"
fi
xz -dc .gpu/bin/graph_speed.xz > /tmp/graph_speed && chmod +x /tmp/graph_speed
python3 "$here/make_models.py" /tmp/m qwen05 llama1b > /dev/null 2>&1
best_window() { # model: the window of the fastest step launched ahead (round 1), 0 = off
  for f in /tmp/l2pf-"$1"-w*.txt; do
    us=$(grep -h "round 1" "$f" | sed -n 's/.*launched ahead \([0-9.]*\) us.*/\1/p')
    [ -n "$us" ] && echo "$us $(echo "$f" | sed 's/.*-w\([0-9]*\)\.txt/\1/')"
  done | sort -n | head -1 | cut -d' ' -f2
}
for spec in qwen05: llama1b: llama1b:q4_k; do
  m=${spec%%:*} q=${spec#*:}
  rm -f /tmp/l2pf-"$m$q"-w*.txt
  for w in 0 $WINDOWS; do
    echo "== graph_speed $m ${q:+QUANT=$q }DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w, PROMPT=128, $STEPS steps"
    QUANT=$q DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w PROMPT=128 /tmp/graph_speed /tmp/m/$m "$STEPS" 2>&1 \
      | grep "GPU busy\|round\|L2 prefetch\|rror" | sed 's/.*INFO //' | tee /tmp/l2pf-"$m$q"-w"$w".txt
  done
  echo "== $m${q:+ $q}: fastest window $(best_window "$m$q") MiB (0: off)"
done
# NODE=1: the node itself at each model's fastest window (batch 1, 2 and 8; about 3 more
# minutes); compare with the same call's graph_speed lines and the last node table.
if [ "${NODE:-0}" = 1 ]; then
  for m in qwen05 llama1b; do
    w=$(best_window "$m")
    echo "== node $m, DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w"
    DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w RES=/tmp/l2node-$m CHECKS=0 HF_BATCHES=1 EAGER_CLIENTS= \
      CLIENTS=1,2,8 bash "$here/run.sh" $m > /tmp/l2node-$m.log 2>&1
    grep -h '"clients"' /tmp/l2node-$m/node_$m.jsonl | cut -c1-240
  done
fi
