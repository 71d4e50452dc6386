#!/usr/bin/env bash
# quick experiment: graphs on/off on llama1b, correctness tiny cpu vs cuda.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=${OUT:-/tmp/exp}; mkdir -p $R
xz -dc .gpu/bin/dayshift-node.xz > /tmp/dayshift-node && chmod +x /tmp/dayshift-node; B=/tmp/dayshift-node
M=/tmp/models
python3 bench/gpu/make_models.py $M llama1b qwen05 > /dev/null 2>&1 || exit 1
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
run() { # model graphs clients [env]
  local m=$1 cg=$2 cl=$3
  vocab=$(python3 -c "import json; print(json.load(open('$M/$m/config.json'))['vocab_size'])")
  if env ${4:-X=1} bash -c "$(declare -f serve); B=$B R=$R serve $m$cg $M/$m 18100 cuda bf16 $cg $m"; then
    timeout 200 python3 bench/gpu/drive.py http://127.0.0.1:18100 $m --vocab $vocab --clients $cl \
      --prompt 128 --out 128 --pid "$(cat /tmp/$m$cg.pid)" | tee "$R/node_$m$cg.jsonl"
    stop $m$cg
  fi
  grep -E "warmed|captured|CUDA graph|timings|WARN|ERROR" $R/$m$cg-node.log | grep -v ingress_url | head -12
}
run llama1b true 1,2,4,8,32 CUDA_CACHE_DISABLE=1
run llama1b false 1,8
run qwen05 true 1,8,32
TINY=$PWD/.gpu/tiny
tv=$(python3 -c "import json; print(json.load(open('$TINY/config.json'))['vocab_size'])")
serve tiny "$TINY" 18101 cpu f32 true tiny && serve tinyc "$TINY" 18102 cuda f32 true tiny
timeout 120 python3 bench/gpu/correctness.py nodes http://127.0.0.1:18101 http://127.0.0.1:18102 tiny $tv | tee "$R/check_tiny.json"
stop tiny; stop tinyc
grep -E "warmed|captured|CUDA graph|WARN|ERROR" $R/tinyc-node.log | head

serve q32 $M/qwen05 18103 cuda f32 true qwen05 && timeout 200 python3 bench/gpu/correctness.py hf $M/qwen05 http://127.0.0.1:18103 qwen05 | tee "$R/check_qwen05_vs_transformers.json"
stop q32
grep -E "captured|CUDA graph|WARN|ERROR" $R/q32-node.log | grep -v ingress_url | head
