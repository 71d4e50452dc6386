#!/usr/bin/env bash
# Builds the bench once per variant (name=flags, from the arguments), in parallel, then
# runs each in turn (figures comparable within one call):
#   bash bench/gpu/results/h200-qgemv-s11/run.sh OUTDIR "base=" "npf2=-DQG_NPF=2" ...
out=$1; shift
mkdir -p "$out" /tmp/qbv
for v in "$@"; do
  n=${v%%=*}; f=${v#*=}
  ( nvcc -O3 -std=c++17 -arch=sm_90 $f -o /tmp/qbv/$n bench/gpu/kernels/qgemv_bench.cu > /tmp/qbv/$n.log 2>&1 || echo "BUILD FAIL $n" ) &
done
wait
for v in "$@"; do
  n=${v%%=*}; f=${v#*=}
  echo "=== $n: $f" | tee -a "$out/summary.txt"
  cat /tmp/qbv/$n.log
  s=$(date +%s)
  { echo "flags: $f"; timeout 150 /tmp/qbv/$n; } > "$out/$n.txt" 2>&1
  grep -E "SUM|FAIL|rror" "$out/$n.txt" | tee -a "$out/summary.txt"
  echo "($(( $(date +%s) - s )) s)" | tee -a "$out/summary.txt"
done
