#!/usr/bin/env bash
# Gateway benchmark: the latency `dayshift serve` adds (p50, p99) and its throughput,
# non-streaming and streaming, against a fixed fast upstream (ingress/examples/
# bench_upstream.rs), beside the same traffic through nginx as a plain reverse proxy.
# Load generator: wrk. Time to first streamed byte: ttfb.py.
#
#   bash bench/gateway/run.sh
#
# Robust on a loaded machine: ROUNDS rounds, each running direct / nginx / dayshift back
# to back (the order rotates every round) with the same wrk settings, in three
# scenarios:
#   saturation  POST non-streaming, wrk -c$CONN  (throughput; queueing dominates p99)
#   latency     POST non-streaming, wrk -c$LAT_CONN (moderate load: p99 is meaningful)
#   stream      POST "stream": true, wrk -c$CONN (CHUNKS chunks CHUNK_MS apart)
# "Added" = path − direct of the same round. Each figure is the median over rounds of
# the per-round value; ratios (dayshift vs nginx) are per round, then the median.
#
# Env: ROUNDS=5 DUR=5s CONN=32 LAT_CONN=4 THREADS=2 CHUNKS=10 CHUNK_MS=20
# Everything listens on 127.0.0.1 only. Prints Markdown; raw rows go to $RAW_OUT if set.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS="${ROUNDS:-5}"
DUR="${DUR:-5s}"
CONN="${CONN:-32}"
LAT_CONN="${LAT_CONN:-4}"
THREADS="${THREADS:-2}"
UP_PORT="${UP_PORT:-18080}"
GW_PORT="${GW_PORT:-18081}"
NG_PORT="${NG_PORT:-18082}"
export CHUNKS="${CHUNKS:-10}" CHUNK_MS="${CHUNK_MS:-20}"

bash bench/gateway/install-nginx.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p dayshift --bin dayshift --example bench_upstream
fi
BIN="${BIN:-$CARGO_TARGET_DIR/release}"
WORK="$(mktemp -d)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=../lib/gateway.sh
source "$(dirname "$0")/../lib/gateway.sh"


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
GW_PID=$!
PIDS+=($GW_PID)
wait_port "$GW_PORT"
register_upstream "$GW_PORT" "$UP_PORT" "$ADMIN"
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
cat > "$WORK/plain.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"What is the capital of France?"}]}'
LUA
sed 's/"messages"/"stream":true,"messages"/' "$WORK/plain.lua" > "$WORK/stream.lua"

UP="http://127.0.0.1:$UP_PORT"; GW="http://127.0.0.1:$GW_PORT"; NG="http://127.0.0.1:$NG_PORT"
declare -A URL=([direct]=$UP [nginx]=$NG [dayshift]=$GW)
RAW="$WORK/raw.tsv"
: > "$RAW"

# One wrk run → "round scenario path p50_ms p99_ms req_s non2xx" on $RAW.
run_wrk() { # round scenario path script conns
  local out
  out=$(wrk -t"$THREADS" -c"$5" -d"$DUR" --latency -s "$WORK/$4.lua" "${URL[$3]}/v1/chat/completions")
  WRK_OUT="$out" python3 - "$1" "$2" "$3" <<'PY' >> "$RAW"
import os, re, sys
out = os.environ["WRK_OUT"]
def ms(v):
    m = re.match(r'([0-9.]+)(us|ms|s|m)$', v)
    return float(m.group(1)) * {'us': 0.001, 'ms': 1, 's': 1000, 'm': 60000}[m.group(2)]
p = {l.split()[0]: ms(l.split()[1]) for l in out.splitlines() if re.match(r'\s+(50|99)%\s', l)}
rps = float(re.search(r'Requests/sec:\s+([0-9.]+)', out).group(1))
m = re.search(r'Non-2xx or 3xx responses:\s+(\d+)', out)
print(*sys.argv[1:], round(p['50%'], 3), round(p['99%'], 3), rps, m.group(1) if m else 0, sep='\t')
PY
}

# Warm-up (connections, caches, JIT-free but page cache and pools).
for p in direct nginx dayshift; do
  wrk -t1 -c"$CONN" -d2s -s "$WORK/plain.lua" "${URL[$p]}/v1/chat/completions" >/dev/null
done

CPU0=$(awk '{print $14+$15}' "/proc/$GW_PID/stat")
ORDERS=("direct nginx dayshift" "nginx dayshift direct" "dayshift direct nginx")
for r in $(seq 1 "$ROUNDS"); do
  order=${ORDERS[$(( (r - 1) % 3 ))]}
  for p in $order; do run_wrk "$r" saturation "$p" plain "$CONN"; done
  for p in $order; do run_wrk "$r" latency "$p" plain "$LAT_CONN"; done
  for p in $order; do run_wrk "$r" stream "$p" stream "$CONN"; done
  echo "round $r/$ROUNDS done" >&2
done
CPU1=$(awk '{print $14+$15}' "/proc/$GW_PID/stat")
TTFB=$(python3 "$ROOT/bench/gateway/ttfb.py" "$UP" "$NG" "$GW")
if [ -n "${RAW_OUT:-}" ]; then cp "$RAW" "$RAW_OUT"; fi

echo
echo "## Gateway benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "wrk -t$THREADS -d$DUR; saturation -c$CONN, latency -c$LAT_CONN, stream -c$CONN ($CHUNKS chunks ${CHUNK_MS} ms apart); $ROUNDS rounds, median of rounds."
echo
python3 - "$RAW" <<'PY'
import statistics as st, sys
from collections import defaultdict
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines() if l]
d = defaultdict(dict)  # (scenario, round) -> path -> (p50, p99, rps, non2xx)
for r, sc, path, p50, p99, rps, bad in rows:
    d[(sc, int(r))][path] = (float(p50), float(p99), float(rps), int(bad))
med = lambda xs: st.median(xs) if xs else float('nan')
print("| scenario | path | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | non-2xx (all rounds) |")
print("|---|---|---|---|---|---|---|---|")
summary = {}
for sc in ["saturation", "latency", "stream"]:
    rounds = sorted(k[1] for k in d if k[0] == sc)
    for path in ["direct", "nginx", "dayshift"]:
        v = [d[(sc, r)][path] for r in rounds]
        dv = [d[(sc, r)]["direct"] for r in rounds]
        a50 = [x[0] - y[0] for x, y in zip(v, dv)]
        a99 = [x[1] - y[1] for x, y in zip(v, dv)]
        print(f"| {sc} | {path} | {med([x[0] for x in v]):.3f} | {med([x[1] for x in v]):.3f} | "
              f"{med(a50):.3f} | {med(a99):.3f} | {med([x[2] for x in v]):.0f} | {sum(x[3] for x in v)} |")
    def ratio(i, added=True):
        out = []
        for r in rounds:
            g, n, dd = d[(sc, r)]["dayshift"], d[(sc, r)]["nginx"], d[(sc, r)]["direct"]
            if added:
                gn, nn = g[i] - dd[i], n[i] - dd[i]
                if nn > 0:
                    out.append(gn / nn)
            else:
                out.append(g[i] / n[i])
        return out
    med_added = lambda who, i: med([d[(sc, r)][who][i] - d[(sc, r)]["direct"][i] for r in rounds])
    rom = []
    for i in (0, 1):
        n = med_added("nginx", i)
        rom.append(f"{med_added('dayshift', i) / n:.2f}" if n > 0 else "n/a")
    summary[sc] = (ratio(0), ratio(1), ratio(2, added=False), rom)
print()
print("Ratios dayshift / nginx, per round then median (rounds where nginx added ≤ 0 ms are left out):")
print()
print("| scenario | added p50 ratio | added p99 ratio | throughput ratio | rounds used (p50/p99) | ratio of medians (p50/p99) |")
print("|---|---|---|---|---|---|")
for sc, (r50, r99, rt, rom) in summary.items():
    f = lambda xs: f"{med(xs):.2f}" if xs else "n/a"
    print(f"| {sc} | {f(r50)} | {f(r99)} | {f(rt)} | {len(r50)}/{len(r99)} | {rom[0]} / {rom[1]} |")
lat = summary["latency"][1]
print()
if lat:
    verdict = "met" if med(lat) <= 1.2 else "NOT met"
    print(f"Target (added p99 ≤ 1.2× nginx's, latency scenario, median of per-round ratios): {med(lat):.2f}× — {verdict}.")
PY
echo
echo "dayshift serve CPU time over all rounds: $(( (CPU1 - CPU0) ))  clock ticks ($(getconf CLK_TCK)/s)"
echo
echo "Time to first streamed byte (median of 50 sequential requests; the whole stream takes ~$((CHUNKS*CHUNK_MS)) ms):"
echo "$TTFB"
