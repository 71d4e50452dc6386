#!/usr/bin/env bash
# quick experiment: graphs on/off on llama1b, correctness tiny cpu vs cuda.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=${OUT:-/tmp/exp}; mkdir -p $R
xz -dc .gpu/bin/dayshift-node.xz > /tmp/dayshift-node && chmod +x /tmp/dayshift-node; B=/tmp/dayshift-node
M=/tmp/models
python3 bench/gpu/make_models.py $M llama1b > /dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/device.txt
serve() { # key path port device dtype graphs
  cat > /tmp/$1.toml <<CFG
node_id = "bench"
listen = "127.0.0.1:$3"
[tls]
mode = "off"
[engine]
device = "$4"
max_running_sequences = 32
kv_cache_tokens = $((32 * 512))
prefill_chunk_tokens = 4096
max_queued_requests = 1024
cuda_graphs = $6
[[models]]
name = "${7:-$1}"
source = { type = "local", path = "$2" }
dtype = "$5"
CFG
  $B serve -c /tmp/$1.toml 2> "$R/$1-node.log" &
  echo $! > /tmp/$1.pid
  for i in $(seq 1 600); do
    curl -sf http://127.0.0.1:$3/health >/dev/null && return 0
    kill -0 "$(cat /tmp/$1.pid)" 2>/dev/null || { echo "node $1 died"; tail -30 "$R/$1-node.log"; return 1; }
    sleep 0.2
  done
  echo "node $1 did not come up"; return 1
}
stop() { kill -TERM "$(cat /tmp/$1.pid)"; wait "$(cat /tmp/$1.pid)"; }
vocab=$(python3 -c "import json; print(json.load(open('$M/llama1b/config.json'))['vocab_size'])")
for cg in true false; do
  if serve l$cg $M/llama1b 18100 cuda bf16 $cg; then
    timeout 200 python3 bench/gpu/drive.py http://127.0.0.1:18100 l$cg --vocab $vocab --clients 1,8,32 \
      --prompt 128 --out 128 --pid "$(cat /tmp/l$cg.pid)" | tee "$R/node_l$cg.jsonl"
    stop l$cg
  fi
  grep -E "warmed|captured|CUDA graph|timings|WARN|ERROR" $R/l$cg-node.log | head -20
done
TINY=$PWD/.gpu/tiny
tv=$(python3 -c "import json; print(json.load(open('$TINY/config.json'))['vocab_size'])")
serve tiny "$TINY" 18101 cpu f32 true tiny && serve tinyc "$TINY" 18102 cuda f32 true tiny
timeout 120 python3 bench/gpu/correctness.py nodes http://127.0.0.1:18101 http://127.0.0.1:18102 tiny $tv | tee "$R/check_tiny.json"
stop tiny; stop tinyc
grep -E "warmed|captured|CUDA graph|WARN|ERROR" $R/tinyc-node.log | head
