#!/usr/bin/env bash
# Why is the node's batch-1 GPU step ~40 us longer than examples/graph_speed.rs's on the
# same GPU (bench/gpu/results/h200-s14/gpu-timing-example-vs-node.txt)? One run on the GPU
# machine: the example at prompt 16 and 128, the node at prompt 128 and 16, every greedy
# step timed by CUDA events (DAYSHIFT_BENCH_GPU_TIMING=1: the engine logs "GPU time of the
# greedy steps", the example prints "GPU busy"). ~3 minutes.
#   bash bench/gpu/node_vs_example.sh        (carry .gpu/bin/dayshift-node.xz,
#                                             .gpu/bin/graph_speed.xz, .gpu/tiny)
# graph_speed.xz: `cargo build --release -p dayshift-node --features cuda --example
# graph_speed` in scripts/build-cuda-node.sh's environment, stripped, `xz -6`.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export DAYSHIFT_BENCH_GPU_TIMING=1
here=$(cd "$(dirname "$0")" && pwd)
xz -dc .gpu/bin/graph_speed.xz > /tmp/graph_speed && chmod +x /tmp/graph_speed
python3 "$here/make_models.py" /tmp/m llama1b > /dev/null 2>&1
for p in 16 128; do
  echo "== graph_speed llama1b PROMPT=$p, 128 steps"
  PROMPT=$p /tmp/graph_speed /tmp/m/llama1b 128 2>&1 | grep "GPU busy\|round"
done
for p in 128 16; do
  echo "== node llama1b PROMPT=$p"
  PROMPT=$p RES=/tmp/nve$p CHECKS=0 HF_BATCHES=1 EAGER_CLIENTS= CLIENTS=1,1 \
    bash "$here/run.sh" llama1b > /tmp/nve$p.log 2>&1
  grep -h '"clients"' /tmp/nve$p/node_llama1b.jsonl | cut -c1-300
  grep -h "GPU time" /tmp/nve$p/llama1b-cuda-bf16-node.log | sed 's/.*(DAYSHIFT_BENCH_GPU_TIMING) //'
done
