# Sourced by the GPU benchmarks (bench/gpu/run.sh, bench/gguf-gpu/run.sh): start one
# dayshift-node on one model and wait until /health answers; stop it.
#   node_up KEY NAME PATH PORT DEVICE DTYPE LOG [CUDA_GRAPHS]
#     DTYPE "" keeps the model's own; CUDA_GRAPHS default true.
#     env: B (the binary), SLOTS (128), SLOT_TOKENS (512), COLD=1 starts it with the
#     driver's JIT cache off (CUDA_CACHE_DISABLE=1: a freshly rented server),
#     PREFIX_CACHE (false: every prompt prefilled whole, as the figures before the
#     node's prefix cache were measured; true to measure the cache).
#     Sets NODE_PID and writes /tmp/KEY.pid; returns 1 (with the log's tail) if it died.
#   node_down KEY      SIGTERM, wait, print its exit status.
node_up() {
  local key=$1 name=$2 path=$3 port=$4 device=$5 dtype=$6 log=$7 graphs=${8:-true}
  local slots=${SLOTS:-128} extra=""
  [ -n "$dtype" ] && extra="dtype = \"$dtype\""
  cat > /tmp/$key.toml <<CFG
node_id = "bench"
listen = "127.0.0.1:$port"
[tls]
mode = "off"
[engine]
device = "$device"
max_running_sequences = $slots
kv_cache_tokens = $((slots * ${SLOT_TOKENS:-512}))
prefill_chunk_tokens = 4096
max_queued_requests = 1024
cuda_graphs = $graphs
prefix_cache = ${PREFIX_CACHE:-false}
[[models]]
name = "$name"
source = { type = "local", path = "$path" }
$extra
CFG
  CUDA_CACHE_DISABLE=${COLD:-0} "$B" serve -c /tmp/$key.toml 2> "$log" &
  NODE_PID=$!
  echo $NODE_PID > /tmp/$key.pid
  for _ in $(seq 1 900); do
    curl -sf http://127.0.0.1:$port/health > /dev/null && return 0
    kill -0 $NODE_PID 2>/dev/null || { echo "node $key died"; tail -20 "$log"; return 1; }
    sleep 0.2
  done
  echo "node $key did not come up"; return 1
}
node_down() {
  local pid
  pid=$(cat /tmp/$1.pid)
  kill -TERM "$pid"; wait "$pid"; echo "$1 exit=$?"
}
