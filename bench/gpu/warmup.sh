#!/usr/bin/env bash
# Fresh-server warm-up (issue 17), on the GPU machine: for each model shape
# (bench/gpu/make_models.py) starts dayshift-node on CUDA with the driver's JIT cache off
# (CUDA_CACHE_DISABLE=1, as on a freshly rented server), and prints, from its log, the
# engine's warm-up time and the graph capture, and the wall time from the process start
# until /health answers (the node answers only once the engine has warmed up, and
# registers with an ingress only then).
#
#   BIN=.gpu/bin/dayshift-node bash bench/gpu/warmup.sh [models...]   # default: llama1b
#
# Output: one JSON line per model on stdout, the logs in $RES (default /tmp/warmup-out).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
here=$(cd "$(dirname "$0")" && pwd)
R=${RES:-/tmp/warmup-out}; mkdir -p "$R"
B=${BIN:-$PWD/.gpu/bin/dayshift-node}
if [ ! -x "$B" ] && [ -f "$B.xz" ]; then xz -dc "$B.xz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
M=/tmp/models
. "$here/node.sh"
for m in ${*:-llama1b}; do
  [ -f "$M/$m/config.json" ] || python3 "$here/make_models.py" $M "$m" > /dev/null || exit 1
  start=$(date +%s.%N)
  if COLD=1 node_up "warm-$m" "$m" "$M/$m" 18300 cuda bf16 "$R/$m-warmup.log"; then
    up=$(date +%s.%N)
    log=$(sed 's/\x1b\[[0-9;]*m//g' "$R/$m-warmup.log")
    warm=$(echo "$log" | grep "engine warmed up" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p' | head -1)
    capture=$(echo "$log" | grep "captured as CUDA graphs" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p' | head -1)
    printf '{"model": "%s", "cuda_cache_disabled": true, "engine_warm_up_s": %s, "graph_capture_s": %s, "start_to_health_s": %.2f}\n' \
      "$m" "${warm:-null}" "${capture:-null}" "$(python3 -c "print($up - $start)")"
    node_down "warm-$m" > /dev/null
  fi
done
