#!/usr/bin/env bash
# The whole system on one GPU machine (issue 21): `dayshift serve` with the `local`
# provider and two pools on a server type declared with `gpu`, so the scheduler starts the
# CUDA `dayshift-node` (provider.node_binary_cuda, device = "cuda"), which fetches its
# model from the ingress's mirror, registers over pinned TLS and answers the official
# `openai` client (chat, stream, embeddings) through the HTTPS gateway; then a schedule
# reload (SIGHUP) closes the window, the nodes drain and stop, and nothing is left running.
#
#   DS_BIN=DIR [DS_DEVICE=cuda|cpu] [DS_SHAPE=qwen05|smoke] [OUT=DIR] scripts/gpu-rehearsal.sh
#
# DS_BIN holds `dayshift` and `dayshift-node` (plain or .xz). Models are made here with
# transformers from a config (scripts/gpu-rehearsal/make_models.py). The node alone (no
# ingress, same model files) gives the reference answers. `DS_DEVICE=cpu DS_SHAPE=smoke`
# is a dry run of the same script on a machine without a GPU (CPU node build, no `gpu` on
# the server type). CLIENT_PYTHONPATH: where the `openai` package is, if not installed.
# CUDA_CACHE_DISABLE=1 is set, so each node start JIT-compiles the kernels as on a fresh
# server. Results: $OUT/summary.json, logs in $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/ds-rehearsal-out}
DEVICE=${DS_DEVICE:-cuda}
SHAPE=${DS_SHAPE:-qwen05}
W=$(mktemp -d /tmp/ds-rehearsal.XXXX)
L=$OUT/logs
mkdir -p "$OUT" "$L" "$W/bin"
export CUDA_CACHE_DISABLE=1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
T0=$(date +%s.%N)
log() { printf "[%6.1f s] %s\n" "$(awk -v a="$(date +%s.%N)" -v b="$T0" "BEGIN{print a-b}")" "$*" | tee -a "$OUT/steps.log"; }
fail() {
  log "FAIL: $*"; echo "{\"ok\": false}" > "$OUT/summary.json"
  keep_node_logs; cleanup; tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"; exit 1
}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
}
for b in dayshift dayshift-node; do
  if [ -f "$DS_BIN/$b.xz" ]; then   # xz, else Python's lzma: one of them is everywhere
    xz -d -c "$DS_BIN/$b.xz" > "$W/bin/$b" 2>/dev/null \
      || python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$DS_BIN/$b.xz" "$W/bin/$b"
  else cp "$DS_BIN/$b" "$W/bin/$b"; fi
  chmod +x "$W/bin/$b"
done
DS=$W/bin/dayshift; NODE=$W/bin/dayshift-node
{ uname -a; nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1
  $DS --version; $NODE --version; ldd "$NODE" | grep -E "cuda|cublas|curand|nvrtc"; } > "$L/machine.txt" 2>&1
log "device $DEVICE, shape $SHAPE; $(grep -m1 -A1 name "$L/machine.txt" | tail -1)"

# 1. Models, made here from a config.
python3 "$here/gpu-rehearsal/make_models.py" "$W/models" "$SHAPE" > "$L/models.txt" 2>&1 \
  || fail "making the models: $(tail -3 "$L/models.txt")"
log "models made: $(du -sh "$W/models/chat" | cut -f1) chat, $(du -sh "$W/models/embed" | cut -f1) embed"

# 2. The node alone on the same files: the reference answers, and a fresh-cache warm-up.
cat > "$W/alone.toml" <<EOF
node_id = "alone"
listen = "127.0.0.1:18600"
cache_dir = "$W/alone-cache"
[tls]
mode = "off"
[engine]
device = "$DEVICE"
[[models]]
name = "chat"
source = { type = "local", path = "$W/models/chat" }
[[models]]
name = "embed"
source = { type = "local", path = "$W/models/embed" }
EOF
$NODE serve -c "$W/alone.toml" 2> "$L/node-alone.log" & pids+=($!); ALONE=$!
for _ in $(seq 600); do curl -sf http://127.0.0.1:18600/health >/dev/null && break; kill -0 $ALONE 2>/dev/null || break; sleep 0.2; done
curl -sf http://127.0.0.1:18600/health >/dev/null || fail "node alone did not start: $(tail -5 "$L/node-alone.log")"
chat_alone=$(curl -s http://127.0.0.1:18600/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"chat","messages":[{"role":"user","content":"t11 t12 t13 t14 t15 t16 t17 t18"}],"max_tokens":32,"temperature":0}')
embed_alone=$(curl -s http://127.0.0.1:18600/v1/embeddings -H 'content-type: application/json' \
  -d '{"model":"embed","input":["t100 t200 t300","t7 t8 t9 t10 t11"]}')
ref=$(python3 "$here/gpu-rehearsal/make_models.py" "$W/models" reference '["t100 t200 t300","t7 t8 t9 t10 t11"]' 2>/dev/null | tail -1)
python3 - "$chat_alone" "$embed_alone" "$ref" > "$W/alone.json" <<'PY' || fail "node alone answers: $chat_alone"
import json, sys
c, e, r = (json.loads(a) for a in sys.argv[1:4])
print(json.dumps({"chat": c["choices"][0]["message"]["content"],
                  "embed": [d["embedding"] for d in e["data"]], "embed_reference": r}))
PY
kill -TERM $ALONE; wait $ALONE
log "node alone: $(grep -o 'engine warmed up.*' "$L/node-alone.log" | head -1); greedy text: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chat"][:60])' "$W/alone.json")..."

# 3. The ingress: local provider, the `local` server type declared with a GPU.
PORT=18643
gpu_line=""; [ "$DEVICE" = cuda ] && gpu_line='gpu = "the GPU of this machine"'
mkdir -p "$W/ingress/state/models"
cp -r "$W/models/chat" "$W/models/embed" "$W/ingress/state/models/"   # the mirror
cat > "$W/ingress/dayshift.toml" <<EOF
cluster = "rehearsal"
state_dir = "state"
schedule = "schedule.toml"

[provider]
kind = "local"
node_binary = "$NODE"
node_binary_cuda = "$NODE"

[provider.server_types.local]
hourly = "0.75"
$gpu_line

[pools.chat]
model = "chat"
model_source = "mirror"
server_types = ["local"]
max_nodes = 1
cold_start = "60s"
drain_timeout = "30s"

[pools.embed]
model = "embed"
model_source = "mirror"
server_types = ["local"]
max_nodes = 1
cold_start = "60s"
drain_timeout = "30s"

[gateway]
listen = "127.0.0.1:$PORT"

[tls]
mode = "self-signed"
EOF
schedule() { # open|closed
  printf 'timezone = "UTC"\n' > "$W/ingress/schedule.toml"
  for p in chat embed; do
    printf '[[window]]\npool = "%s"\ndays = "mon-sun"\nstart = "00:00"\nend = "24:00"\nnodes = 1\n' $p >> "$W/ingress/schedule.toml"
  done
  [ "$1" = closed ] && printf '[[override]]\ndate = "%s"\nclosed = true\n' "$(date -u +%F)" >> "$W/ingress/schedule.toml"
  return 0
}
schedule open
cd "$W/ingress" || fail "no ingress dir"
$DS config check dayshift.toml > "$L/config-check.txt" 2>&1 || fail "config check: $(cat "$L/config-check.txt")"
KEY=$($DS keys create --name rehearsal --json --config dayshift.toml | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])') \
  || fail "keys create"
DAYSHIFT_TICK_MS=500 $DS serve --config dayshift.toml > "$L/serve.log" 2>&1 & pids+=($!); SERVE=$!
log "dayshift serve started (pid $SERVE); the window is open"

keep_node_logs() { # the local provider removes a node's folder with its server
  for d in "$W"/ingress/state/local/servers/*/; do
    [ -f "$d/node.log" ] && cp "$d/node.log" "$L/srv-$(basename "$d").log" 2>/dev/null
  done
  return 0
}
sql() { python3 - "$W/ingress/state/dayshift.db" "$1" <<'PY'
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.row_factory = sqlite3.Row
print(json.dumps([dict(r) for r in c.execute(sys.argv[2])]))
PY
}
ready=""
for _ in $(seq 900); do
  ready=$(sql "SELECT count(*) AS n FROM nodes WHERE state = 'ready'" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])' 2>/dev/null)
  [ "$ready" = 2 ] && break
  kill -0 $SERVE 2>/dev/null || fail "serve died: $(tail -5 "$L/serve.log")"
  sleep 0.2
done
[ "$ready" = 2 ] || fail "the two nodes were not ready within 180 s: $(tail -5 "$L/serve.log")"
keep_node_logs
sql "SELECT id, pool, state, server_type, api_url, tls_cert_sha256, created_at, registered_at, registered_at - created_at AS cold_start_ms FROM nodes" > "$L/nodes-ready.json"
log "both nodes ready: $(python3 -c '
import json, sys
print(", ".join("%s %.1f s (pinned %s..., %s)" % (n["pool"], n["cold_start_ms"] / 1000, n["tls_cert_sha256"][:12], n["api_url"])
                for n in json.load(open(sys.argv[1]))))' "$L/nodes-ready.json")"

# 4. The official openai client through the HTTPS gateway.
PYTHONPATH=${CLIENT_PYTHONPATH:-} python3 "$here/gpu-rehearsal/client.py" "https://127.0.0.1:$PORT/v1" \
  "$W/ingress/state/tls/self-signed.crt" "$KEY" "$W/alone.json" > "$L/client.json" 2> "$L/client.err"
client_rc=$?
log "openai client (rc $client_rc): $(cat "$L/client.json") $(tail -2 "$L/client.err")"

# 5. The window closes: schedule reload by SIGHUP; the nodes drain and are deleted.
node_pids=$(for f in "$W"/ingress/state/local/servers/*/pid; do echo "$(cat "$f")"; done | tr '\n' ' ')
schedule closed
kill -HUP $SERVE
log "window closed (SIGHUP); node pids: $node_pids"
gone=""
for _ in $(seq 600); do
  left=$(sql "SELECT count(*) AS n FROM nodes WHERE state NOT IN ('deleted', 'failed')" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])')
  keep_node_logs
  [ "$left" = 0 ] && { gone=1; break; }
  sleep 0.2
done
sql "SELECT n.id, n.pool, n.state, e.from_state, e.to_state, e.detail, e.at FROM nodes n JOIN node_events e ON e.node_id = n.id ORDER BY e.at" > "$L/node-events.json"
running=""
for p in $node_pids; do kill -0 "$p" 2>/dev/null && running="$running $p"; done
log "after the window: nodes left $left; node processes still running:${running:- none}"

# 6. Stop the ingress; nothing of ours may be left.
kill -TERM $SERVE; wait $SERVE; serve_rc=$?
sleep 1
leftover=$(ps -eo pid,args | grep -F "$W/bin/" | grep -v grep || true)
log "serve exit $serve_rc; leftover processes: ${leftover:-none}"

for f in "$L"/srv-*.log; do grep -hE "drain|goodbye|bye|warmed" "$f" | sed "s|^|$(basename "$f"): |" >> "$OUT/steps.log"; done
python3 - "$L" "$client_rc" "${gone:-0}" "${running:-}" "$leftover" "$serve_rc" <<'PY'
import json, re, sys, glob
out, client_rc, gone, running, leftover, serve_rc = sys.argv[1:7]
nodes = json.load(open(f"{out}/nodes-ready.json"))
client = {}
try:
    client = json.load(open(f"{out}/client.json"))
except Exception:
    pass
warm = re.findall(r"engine warmed up secs=([0-9.]+)", open(f"{out}/node-alone.log").read())
warm_nodes = {}
for f in glob.glob(f"{out}/srv-*.log"):
    warm_nodes[f.split("/")[-1]] = [float(w) for w in re.findall(r"engine warmed up secs=([0-9.]+)", open(f).read())]
s = {
    "ok": client_rc == "0" and gone == "1" and not running.strip() and not leftover.strip()
          and serve_rc == "0",
    "cold_start_secs": {n["pool"]: n["cold_start_ms"] / 1000 for n in nodes},
    "pinned_tls": all(n["api_url"].startswith("https://") and n["tls_cert_sha256"] for n in nodes),
    "warm_up_secs_node_alone_fresh_cache": [float(w) for w in warm],
    "warm_up_secs_scheduled_nodes_fresh_cache": warm_nodes,
    "client": client,
    "drained_and_deleted": gone == "1",
    "node_processes_left": running.split(),
    "leftover_processes": leftover.strip(),
}
json.dump(s, open(f"{out}/../summary.json", "w"), indent=1)
print(json.dumps(s, indent=1))
PY
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
cleanup
rm -rf "$W"
