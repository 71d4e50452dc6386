#!/usr/bin/env bash
# ncu profile of the decode steps of llama1b bf16 at batch 1: per kernel GPU time.
#   CG=false SKIP=3000 COUNT=400 bash ncu.sh   -> eager-ncu.csv (graphs off)
#   bash ncu.sh                                -> graphs-gemv-ncu.csv (graph nodes one by one)
# (The eager profile was taken with SKIP/COUNT as above and without --graph-profiling,
# which only matters for graphs.) Run from the repository root on the device tool.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=${OUT:-/tmp/exp}; mkdir -p $R
xz -dc .gpu/bin/dayshift-node.xz > /tmp/dayshift-node && chmod +x /tmp/dayshift-node; B=/tmp/dayshift-node
M=/tmp/models
python3 bench/gpu/make_models.py $M llama1b > /dev/null 2>&1 || exit 1
cat > /tmp/p.toml <<CFG
node_id = "bench"
listen = "127.0.0.1:18100"
[tls]
mode = "off"
[engine]
device = "cuda"
max_running_sequences = 4
kv_cache_tokens = 2048
cuda_graphs = ${CG:-true}
[[models]]
name = "m"
source = { type = "local", path = "$M/llama1b" }
dtype = "bf16"
CFG
ncu --target-processes all --graph-profiling node --launch-skip ${SKIP:-6000} --launch-count ${COUNT:-600} --metrics gpu__time_duration.sum --csv --page raw --log-file $R/ncu.csv $B serve -c /tmp/p.toml 2> $R/node.log &
pid=$!
for i in $(seq 1 600); do curl -sf http://127.0.0.1:18100/health >/dev/null && break; sleep 0.5; done
prompt=$(python3 -c "print(' '.join('t%d'%(i*7+3) for i in range(64)))")
curl -s http://127.0.0.1:18100/v1/completions -H 'content-type: application/json' -d "{\"model\":\"m\",\"prompt\":\"$prompt\",\"max_tokens\":100,\"temperature\":0}" | head -c 300; echo
sleep 2
pkill -TERM -f "dayshift-node serve"; wait $pid
python3 - $R/ncu.csv <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
data = []
for r in rows:
    if r and r[0] == 'ID': hdr = r; continue
    if hdr and r and r[0].isdigit(): data.append(dict(zip(hdr, r)))
print(len(data), "kernels")
tot = collections.defaultdict(float); cnt = collections.Counter()
for d in data:
    k = d['Kernel Name'][:90]
    t = float(d['gpu__time_duration.sum'].replace(',',''))
    tot[k] += t; cnt[k] += 1
s = sum(tot.values())
print("total ns", s)
for k, v in sorted(tot.items(), key=lambda x: -x[1])[:45]:
    print(f"{v/s*100:5.1f}% {v/cnt[k]:9.0f} ns x{cnt[k]:4d} {k}")
PY
