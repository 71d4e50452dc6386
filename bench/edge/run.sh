#!/usr/bin/env bash
# Edge benchmark: normal requests' latency (wrk, p50/p99) through `dayshift serve` alone,
# then while slow and greedy clients attack it (bench/edge/slow_clients.py: silent,
# slow-header, half-sent-body, slow-body and idle connections, PER_KIND of each from
# their own loopback addresses, plus FLOOD connections at once from one address), and how
# long the ingress took to close each kind against the configured bounds.
#
#   bash bench/edge/run.sh
#   SKIP_BUILD=1 BIN=target/debug bash bench/edge/run.sh   # binaries built elsewhere
#
# Env: DUR=15 PER_KIND=40 FLOOD=100 CONN=4 HEADER=2s BODY=2s IDLE=4s PER_ADDRESS=64
# Everything listens on 127.0.0.1 only; the upstream is ingress/examples/bench_upstream.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DUR="${DUR:-15}"
PER_KIND="${PER_KIND:-40}"
FLOOD="${FLOOD:-100}"
CONN="${CONN:-4}"
HEADER="${HEADER:-2s}"
BODY="${BODY:-2s}"
IDLE="${IDLE:-4s}"
PER_ADDRESS="${PER_ADDRESS:-64}"
UP_PORT="${UP_PORT:-18090}"
GW_PORT="${GW_PORT:-18091}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p dayshift --bin dayshift --example bench_upstream
fi
BIN="${BIN:-$CARGO_TARGET_DIR/release}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=../lib/gateway.sh
source "$(dirname "$0")/../lib/gateway.sh"

"$BIN/examples/bench_upstream" "127.0.0.1:$UP_PORT" 2>/dev/null &
PIDS+=($!)
wait_port "$UP_PORT"

mkdir -p "$WORK/state"
cat > "$WORK/dayshift.toml" <<TOML
cluster = "bench-edge"
state_dir = "$WORK/state"
[provider]
kind = "local"
[pools.bench]
model = "bench"
[gateway]
listen = "127.0.0.1:$GW_PORT"
header_read_timeout = "$HEADER"
body_read_timeout = "$BODY"
idle_timeout = "$IDLE"
max_connections_per_address = $PER_ADDRESS
[tls]
mode = "off"
TOML
ADMIN="bench-admin-$RANDOM$RANDOM"
DAYSHIFT_ADMIN_TOKEN="$ADMIN" DAYSHIFT_LOG=warn "$BIN/dayshift" serve --config "$WORK/dayshift.toml" 2>"$WORK/ingress.log" &
PIDS+=($!)
wait_port "$GW_PORT"
register_upstream "$GW_PORT" "$UP_PORT" "$ADMIN"
export KEY
KEY=$("$BIN/dayshift" keys create --config "$WORK/dayshift.toml" --name bench --json 2>/dev/null | json '["secret"]')

cat > "$WORK/plain.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"What is the capital of France?"}]}'
LUA
URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
pct() { # wrk output → "p50_ms p99_ms req/s non2xx"
  python3 -c '
import re, sys
out = sys.stdin.read()
def ms(v):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", v)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]
p = {l.split()[0]: ms(l.split()[1]) for l in out.splitlines() if re.match(r"\s+(50|99)%\s", l)}
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
print(round(p["50%"], 3), round(p["99%"], 3), round(rps), bad.group(1) if bad else 0)'
}
wrk -t1 -c"$CONN" -d2s -s "$WORK/plain.lua" "$URL" >/dev/null   # warm-up
BASE=$(wrk -t2 -c"$CONN" -d"${DUR}s" --latency -s "$WORK/plain.lua" "$URL" | pct)
python3 "$ROOT/bench/edge/slow_clients.py" "127.0.0.1:$GW_PORT" "$DUR" "$PER_KIND" "$FLOOD" >"$WORK/attack.json" &
ATTACK=$!
sleep 1
UNDER=$(wrk -t2 -c"$CONN" -d"$((DUR - 2))s" --latency -s "$WORK/plain.lua" "$URL" | pct)
wait "$ATTACK"
METRICS=$(curl -sf "http://127.0.0.1:$GW_PORT/metrics" | grep -E '^dayshift_connections_(refused|closed)_total' || true)

echo
echo "## Edge benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "Bounds: header_read_timeout $HEADER, body_read_timeout $BODY, idle_timeout $IDLE, max_connections_per_address $PER_ADDRESS."
echo "Normal traffic: wrk -t2 -c$CONN POST /v1/chat/completions (non-streaming, fixed upstream) from 127.0.0.1."
echo "Attack: $PER_KIND connections of each slow kind, reconnecting for ${DUR} s; $FLOOD connections at once from one address."
echo
echo "| normal traffic | p50 ms | p99 ms | req/s | non-2xx |"
echo "|---|---|---|---|---|"
read -r b50 b99 brps bbad <<<"$BASE"
read -r u50 u99 urps ubad <<<"$UNDER"
echo "| alone | $b50 | $b99 | $brps | $bbad |"
echo "| under attack | $u50 | $u99 | $urps | $ubad |"
echo
python3 - "$WORK/attack.json" "$HEADER" "$BODY" "$IDLE" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
secs = lambda v: float(v.rstrip("s"))
header, body, idle = (secs(v) for v in sys.argv[2:5])
bound = {"silent": header, "slow_header": header, "half_body": body, "slow_body": body, "idle": idle}
print("| slow client | connections | closed after (min–max s) | bound s | answers |")
print("|---|---|---|---|---|")
for kind in ["silent", "slow_header", "half_body", "slow_body", "idle"]:
    k = r.get(kind, {})
    answers = ", ".join(f"{s}: {n}" for s, n in sorted(k.get("statuses", {}).items()))
    print(f"| {kind} | {k.get('connections', 0)} | {k.get('min_close_s', 0)}–{k.get('max_close_s', 0)} | {bound[kind]} | {answers} |")
f = r.get("flood", {})
print()
print(f"Flood from one address: {f.get('opened')} connections opened, {f.get('closed_at_once')} closed at once (per-address limit).")
if r.get("errors"):
    print("Client errors:", r["errors"])
PY
echo
echo '```'
echo "$METRICS"
echo '```'
u99_ok=$(python3 -c "print('yes' if float('$u99') < 50 else 'NO')")
echo
echo "p99 under attack < 50 ms: $u99_ok"
