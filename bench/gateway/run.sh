#!/usr/bin/env bash
# Gateway benchmark: the latency `dayshift serve` adds (p50, p99) and its throughput,
# non-streaming and streaming, against a fixed fast upstream (ingress/examples/
# bench_upstream.rs), beside the same traffic through nginx as a plain reverse proxy.
# Load generator: wrk. Time to first streamed byte: ttfb.py.
#
#   bash bench/gateway/run.sh            # DUR=10s CONN=32 THREADS=2 by default
#
# Everything listens on 127.0.0.1 only. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DUR="${DUR:-10s}"
CONN="${CONN:-32}"
THREADS="${THREADS:-2}"
UP_PORT="${UP_PORT:-18080}"
GW_PORT="${GW_PORT:-18081}"
NG_PORT="${NG_PORT:-18082}"
export CHUNKS="${CHUNKS:-10}" CHUNK_MS="${CHUNK_MS:-20}"

bash scripts/deps/nginx.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q -p dayshift --bin dayshift --example bench_upstream
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $1 did not open" >&2; exit 1
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# 1. The fixed upstream.
"$BIN/examples/bench_upstream" "127.0.0.1:$UP_PORT" 2>/dev/null &
PIDS+=($!)
wait_port "$UP_PORT"

# 2. The gateway (TLS off, as behind a load balancer; nginx gets no TLS either).
mkdir -p "$WORK/state"
cat > "$WORK/dayshift.toml" <<TOML
cluster = "bench"
state_dir = "$WORK/state"
[provider]
kind = "local"
[pools.bench]
model = "bench"
[gateway]
listen = "127.0.0.1:$GW_PORT"
[tls]
mode = "off"
TOML
ADMIN="bench-admin-$RANDOM$RANDOM"
DAYSHIFT_ADMIN_TOKEN="$ADMIN" DAYSHIFT_LOG=warn "$BIN/dayshift" serve --config "$WORK/dayshift.toml" 2>"$WORK/ingress.log" &
PIDS+=($!)
wait_port "$GW_PORT"
TOKEN=$(curl -sf -H "Authorization: Bearer $ADMIN" -d '{"id":"bench-1","pool":"bench"}' \
  -H 'content-type: application/json' "http://127.0.0.1:$GW_PORT/admin/nodes" | json '["join_token"]')
REG=$(cat <<JSON
{"protocol_version":1,"node_id":"bench-1","join_token":"$TOKEN","api_url":"http://127.0.0.1:$UP_PORT",
 "tls_cert_sha256":null,"models":[{"id":"bench","kind":"generation","architecture":"llama","context_length":2048,"dtype":"f32"}],
 "gpus":[],"capacity":{"max_running_sequences":64,"kv_cache_tokens":65536,"max_queued_requests":1024},"node_version":"bench"}
JSON
)
SESSION=$(curl -sf -H 'content-type: application/json' -d "$REG" "http://127.0.0.1:$GW_PORT/internal/nodes/register" | json '["session_token"]')
( while true; do
    curl -sf -o /dev/null -H "Authorization: Bearer $SESSION" -H 'content-type: application/json' \
      -d '{"node_id":"bench-1","state":"ready","load":{"running_sequences":0,"queued_requests":0,"kv_cache_used_tokens":0,"kv_cache_total_tokens":0,"generation_tokens_per_second":0.0,"requests_in_flight":0}}' \
      "http://127.0.0.1:$GW_PORT/internal/nodes/heartbeat" || true
    sleep 3
  done ) &
PIDS+=($!)
export KEY
KEY=$("$BIN/dayshift" keys create --config "$WORK/dayshift.toml" --name bench --json 2>/dev/null | json '["secret"]')

# 3. nginx as a plain reverse proxy (keep-alive upstream, no buffering for SSE).
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
/usr/sbin/nginx -c "$WORK/nginx.conf" -p "$WORK"
wait_port "$NG_PORT"

# 4. Load.
run_wrk() { # name url script conns
  local out
  out=$(wrk -t"$THREADS" -c"$4" -d"$DUR" --latency -s "$3" "$2/v1/chat/completions")
  local p50 p99 rps errs
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  errs=$(echo "$out" | awk '/Non-2xx/{print $5}')
  echo "$1 $(to_ms "$p50") $(to_ms "$p99") $rps ${errs:-0}"
}
to_ms() { python3 -c "
import re,sys
v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s|m)',v); n=float(m.group(1)); u=m.group(2)
print(round(n*{'us':0.001,'ms':1,'s':1000,'m':60000}[u],3))" "$1"; }

cat > "$WORK/plain.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"What is the capital of France?"}]}'
LUA
sed 's/"messages"/"stream":true,"messages"/' "$WORK/plain.lua" > "$WORK/stream.lua"

UP="http://127.0.0.1:$UP_PORT"; GW="http://127.0.0.1:$GW_PORT"; NG="http://127.0.0.1:$NG_PORT"
# Warm-up.
wrk -t1 -c4 -d2s -s "$WORK/plain.lua" "$GW/v1/chat/completions" >/dev/null
wrk -t1 -c4 -d2s -s "$WORK/plain.lua" "$NG/v1/chat/completions" >/dev/null

declare -A R
for mode in plain stream; do
  conns=$CONN
  for target in direct:$UP nginx:$NG dayshift:$GW; do
    name=${target%%:*}; url=${target#*:}
    R[$mode-$name]=$(run_wrk "$name" "$url" "$WORK/$mode.lua" "$conns")
  done
done
TTFB=$(python3 "$ROOT/bench/gateway/ttfb.py" "$UP" "$NG" "$GW")

echo
echo "## Gateway benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, wrk -t$THREADS -c$CONN -d$DUR; stream: $CHUNKS chunks ${CHUNK_MS} ms apart)"
echo
echo "| mode | path | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | non-2xx |"
echo "|---|---|---|---|---|---|---|---|"
for mode in plain stream; do
  read -r _ d50 d99 _ _ <<<"${R[$mode-direct]}"
  for name in direct nginx dayshift; do
    read -r _ p50 p99 rps errs <<<"${R[$mode-$name]}"
    a50=$(python3 -c "print(round($p50-$d50,3))"); a99=$(python3 -c "print(round($p99-$d99,3))")
    echo "| $mode | $name | $p50 | $p99 | $a50 | $a99 | $rps | $errs |"
  done
done
read -r _ _ n99 _ _ <<<"${R[plain-nginx]}"; read -r _ _ g99 _ _ <<<"${R[plain-dayshift]}"; read -r _ _ d99 _ _ <<<"${R[plain-direct]}"
echo
python3 -c "
n=$n99-$d99; g=$g99-$d99
print(f'Added p99 (non-streaming): dayshift {g:.3f} ms, nginx {n:.3f} ms, ratio {g/n if n>0 else float(\"inf\"):.2f} (target <= 1.2)')"
echo
echo "Time to first streamed byte (median of 50 sequential requests; the whole stream takes ~$((CHUNKS*CHUNK_MS)) ms):"
echo "$TTFB"
