# Sourced by the gateway benches (bench/gateway, bench/edge): shared steps around a
# `dayshift serve` with TLS off and the fixed upstream `bench_upstream` as its node.
# Callers define PIDS=() and a cleanup trap that kills "${PIDS[@]}".

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $1 did not open" >&2; exit 1
}

# json EXPR: prints EXPR (e.g. '["secret"]') of the JSON on stdin.
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# register_upstream GW_PORT UP_PORT ADMIN: registers bench_upstream (at UP_PORT) as node
# `bench-1` of pool `bench` with the gateway and keeps it alive with heartbeats in the
# background (its PID appended to PIDS).
register_upstream() {
  local gw="$1" up="$2" admin="$3" token reg session
  token=$(curl -sf -H "Authorization: Bearer $admin" -d '{"id":"bench-1","pool":"bench"}' \
    -H 'content-type: application/json' "http://127.0.0.1:$gw/admin/nodes" | json '["join_token"]')
  reg=$(cat <<JSON
{"protocol_version":2,"node_id":"bench-1","join_token":"$token","api_url":"http://127.0.0.1:$up",
 "tls_cert_sha256":null,"models":[{"id":"bench","kind":"generation","architecture":"llama","context_length":2048,"dtype":"f32"}],
 "gpus":[],"capacity":{"max_running_sequences":64,"kv_cache_tokens":65536,"max_queued_requests":1024},"node_version":"bench",
 "api_token":"bench-upstream-token-0123456789abcdef"}
JSON
)
  session=$(curl -sf -H 'content-type: application/json' -d "$reg" "http://127.0.0.1:$gw/internal/nodes/register" | json '["session_token"]')
  ( while true; do
      curl -sf -o /dev/null -H "Authorization: Bearer $session" -H 'content-type: application/json' \
        -d '{"node_id":"bench-1","state":"ready","load":{"running_sequences":0,"queued_requests":0,"kv_cache_used_tokens":0,"kv_cache_total_tokens":0,"generation_tokens_per_second":0.0,"requests_in_flight":0}}' \
        "http://127.0.0.1:$gw/internal/nodes/heartbeat" || true
      sleep 2
    done ) &
  PIDS+=($!)
}
