#!/usr/bin/env bash
# Variants of the batch-1 decode step, against the candle-captured step, in one call on the
# GPU machine (issue 17; session 17's run, bench/gpu/results/h200-s17/: the L2 prefetch a
# loss, the static step with pdl 1.02-1.06x, since then the node's default):
#   - DAYSHIFT_BENCH_L2_PREFETCH_MIB=W: each GEMV asks L2 for the weight bytes W MiB ahead
#     (gpu-node/src/model/l2_prefetch.rs): DRAM kept busy across launches and attention;
#   - DAYSHIFT_BENCH_STATIC_STEP=plain|pdl|pair|rope|ks|n4|u2 joined by + (or default+...): the decode graph captured from
#     launches over buffers allocated before the capture (gpu-node/src/model/static_step.rs:
#     kernels only, no allocation nodes); pdl: each launched with programmatic dependent
#     launch (the next kernel's blocks start and load weights while the current computes);
#     pair: the gate|up GEMV writes silu(gate) * up, so the down projection's blocks no
#     longer each compute it (the same roundings: the tokens must not change); rope:
#     RoPE and the new token's K/V write inside the attention kernel (one launch a layer
#     less; on by default since session 20, bench/gpu/results/h100-s20/rope-ab/); ks, n4, u2:
#     the GEMV launch shapes of StaticStepMode (on by default since session 20; `default`
#     as the first flag starts from the default: `default+...`).
# Steps, ~7 minutes:
#   1. bench/gpu/kernels/l2_prefetch_bench.cu: a step's GEMVs alone, each kernel
#      prefetching nothing, the next GEMV's weights, or the next two GEMVs'; then
#      kernels/gemv_bench.cu at batch 1, whose `nodep+pdl` chains each shape's GEMV as
#      the static step's pdl mode launches it, and whose `pair` lines time a layer's
#      gate|up + down as now against the SwiGLU in gate|up (outputs equal bit for bit);
#   2. examples/graph_speed.rs on qwen05 and llama1b (and llama1b quantized to Q4_K at
#      load) at each setting of SETTINGS (STATIC:MIB; off:0 is the candle-captured step, the baseline): µs a
#      step as the engine runs it, the GPU's busy time (DAYSHIFT_BENCH_GPU_TIMING=1), and
#      a hash of the tokens (every variant must give the default's tokens); then each
#      model's fastest setting.
#   [SETTINGS="off:0 pdl:0 pdl+pair:0 off:16"] [MODELS="qwen05: llama1b:q4_k"] [SKIP_KERNELS=1] \
#     [NODE=1] bash bench/gpu/step_variants.sh
#     (carry .gpu/bin/graph_speed.xz; with NODE=1 also .gpu/bin/dayshift-node.xz, .gpu/tiny)
# graph_speed.xz: `cargo build --release -p dayshift-node --features cuda --example
# graph_speed` in scripts/build-cuda-node.sh's environment, stripped, `xz -6`.
# NODE=1 then drives the node at each model's fastest setting (batch 1, 2, 8; ~3 minutes;
# with everything, close to the device tool's 10 minutes a call: a second call with
# ONLY_NODE=1 NODE_SETTING=STATIC:MIB runs just the node, at that setting).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export DAYSHIFT_BENCH_GPU_TIMING=1
here=$(cd "$(dirname "$0")" && pwd)
# Every figure also goes to files under $OUT (the device tool's folder that comes back,
# even from a call cut at its time limit), else /tmp/step-variants.
R=${OUT:-/tmp/step-variants}/step-variants; mkdir -p "$R"
SETTINGS=${SETTINGS:-off:0 pdl:0 pdl+pair:0 pdl+rope:0 pdl+pair+rope:0}
STEPS=${STEPS:-256}
if [ "${ONLY_NODE:-0}" = 1 ]; then
  NODE=1 SETTINGS=
elif [ "${SKIP_KERNELS:-0}" = 1 ]; then
  echo "== SKIP_KERNELS=1: kernel benches skipped"
elif command -v nvcc > /dev/null; then
  echo "== kernels/l2_prefetch_bench.cu"
  nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/l2pf "$here/kernels/l2_prefetch_bench.cu" && /tmp/l2pf | tee "$R/l2_prefetch_bench.txt"
  echo "== kernels/gemv_bench.cu, batch 1 (node+pdl: the launch attribute alone; nodep+pdl: as the static step's pdl mode; then 'pair' lines: gate|up + down as now and with the SwiGLU in gate|up)"
  nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/gemv_bench "$here/kernels/gemv_bench.cu" -lcublas \
    && GB_B=1 /tmp/gemv_bench | tee "$R/gemv_bench.txt"
else
  echo "== no nvcc here: kernels/l2_prefetch_bench.cu skipped"
fi
if [ -n "$SETTINGS" ]; then
  xz -dc .gpu/bin/graph_speed.xz > /tmp/graph_speed && chmod +x /tmp/graph_speed
  # every model MODELS names (each once; a model made by an earlier call is kept)
  for m in $(for spec in ${MODELS:-qwen05: llama1b:}; do echo "${spec%%:*}"; done | sort -u); do
    [ -f /tmp/m/$m/config.json ] || python3 "$here/make_models.py" /tmp/m "$m" > /dev/null 2>&1
  done
fi
# sv-MODEL-STATIC-wMIB.txt per setting ('+' written as '_': plain file names come back
# from the device tool)
best_setting() { # model: the setting (STATIC:MIB) of the fastest step launched ahead (round 1)
  for f in "$R"/sv-"$1"-*.txt; do
    us=$(grep -h "round 1" "$f" | sed -n 's/.*launched ahead \([0-9.]*\) us.*/\1/p')
    x=$(basename "$f" .txt | sed "s/^sv-$1-//")
    [ -n "$us" ] && echo "$us $(echo "${x%-w*}" | tr _ +):${x##*-w}"
  done | sort -n | head -1 | cut -d' ' -f2
}
summary() { # model: each setting's step (round 1, launched ahead) against off:0, and its tokens
  local base basetok f us tok x
  base=$(sed -n 's/^round 1.*launched ahead \([0-9.]*\) us.*/\1/p' "$R/sv-$1-off-w0.txt" 2>/dev/null)
  basetok=$(sed -n 's/^round 1.*tokens \([0-9a-f]*\).*/\1/p' "$R/sv-$1-off-w0.txt" 2>/dev/null)
  for f in "$R"/sv-"$1"-*.txt; do
    us=$(sed -n 's/^round 1.*launched ahead \([0-9.]*\) us.*/\1/p' "$f")
    tok=$(sed -n 's/^round 1.*tokens \([0-9a-f]*\).*/\1/p' "$f")
    x=$(basename "$f" .txt | sed "s/^sv-$1-//")
    python3 -c "import sys; b,u=sys.argv[1],sys.argv[2]; print(f'   {sys.argv[3]:<16} {u or \"-\":>8} us a step' + (f'  {float(b)/float(u):.3f}x off:0' if b and u else '') + ('  same tokens' if sys.argv[4] == sys.argv[5] and sys.argv[4] else '  OTHER TOKENS'))" \
      "$base" "$us" "$(echo "${x%-w*}" | tr _ +):${x##*-w}" "$tok" "$basetok"
  done
}
for spec in ${SETTINGS:+${MODELS:-qwen05: llama1b: llama1b:q4_k}}; do
  m=${spec%%:*} q=${spec#*:}
  rm -f "$R"/sv-"$m$q"-*.txt
  for s in $SETTINGS; do
    st=${s%%:*} w=${s#*:}
    echo "== graph_speed $m ${q:+QUANT=$q }DAYSHIFT_BENCH_STATIC_STEP=$st DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w, PROMPT=128, $STEPS steps"
    QUANT=$q DAYSHIFT_BENCH_STATIC_STEP=$st DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w PROMPT=128 \
      /tmp/graph_speed /tmp/m/$m "$STEPS" 2>&1 \
      | grep "GPU busy\|round\|L2 prefetch\|static\|rror" | sed 's/.*INFO //' | tee "$R/sv-$m$q-$(echo "$st" | tr + _)-w$w.txt"
  done
  summary "$m$q"
  echo "== $m${q:+ $q}: fastest setting $(best_setting "$m$q") (STATIC:MIB; off:0 = candle-captured)"
done
# NODE=1: the node itself at each model's fastest setting (batch 1, 2 and 8); compare with
# the same call's graph_speed lines and the last node table.
if [ "${NODE:-0}" = 1 ]; then
  for m in qwen05 llama1b; do
    s=${NODE_SETTING:-$(best_setting "$m")}
    st=${s%%:*} w=${s#*:}
    echo "== node $m, DAYSHIFT_BENCH_STATIC_STEP=$st DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w"
    DAYSHIFT_BENCH_STATIC_STEP=$st DAYSHIFT_BENCH_L2_PREFETCH_MIB=$w RES="$R/node-$m" OUT= \
      CHECKS=0 HF_BATCHES=1 EAGER_CLIENTS= CLIENTS=1,2,8 bash "$here/run.sh" $m > "$R/node-$m.log" 2>&1
    grep -h '"clients"' "$R/node-$m/node_$m.jsonl" | cut -c1-240
    grep -h "static launches\|static decode step" "$R/node-$m"/*-node.log | head -3
  done
fi
