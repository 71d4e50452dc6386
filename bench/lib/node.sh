# Sourced by the bench scripts. node_addr LOG PID: waits until the dayshift-node that
# PID runs (started with `listen = "127.0.0.1:0"`, TLS off, stderr to LOG) answers
# /health, then prints its address; prints LOG's tail and fails if it exits or takes
# more than 3 minutes.
#   addr="$(node_addr "$work/node.log" "$node_pid")" || exit 1
node_addr() {
  local log="$1" pid="$2" addr=""
  for _ in $(seq 1 900); do
    addr="$(grep -o 'addr=[0-9.:]*' "$log" | head -1 | cut -d= -f2 || true)"
    if [ -n "$addr" ] && curl -sf "http://$addr/health" >/dev/null; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "dayshift-node exited:" >&2; tail -20 "$log" >&2; return 1; }
    sleep 0.2
  done
  echo "dayshift-node did not answer /health in 3 minutes" >&2
  tail -20 "$log" >&2
  return 1
}

# node_cpu_config FILE NAME MODEL_PATH [ENGINE_LINE...]: writes a node config serving the
# local model MODEL_PATH as NAME on the CPU, on 127.0.0.1:0 without TLS; each
# ENGINE_LINE (e.g. "prefix_cache = false") is added to its [engine] table.
node_cpu_config() {
  local file="$1" name="$2" path="$3"
  shift 3
  {
    printf 'node_id = "bench"\nlisten = "127.0.0.1:0"\n[tls]\nmode = "off"\n[engine]\ndevice = "cpu"\n'
    for line in "$@"; do printf '%s\n' "$line"; done
    printf '[[models]]\nname = "%s"\nsource = { type = "local", path = "%s" }\n' "$name" "$path"
  } > "$file"
}

# node_work: a temporary directory in $work, removed at exit with the node of $node_pid
# (set by the caller after starting one) stopped.
node_work() {
  work="$(mktemp -d)"
  node_pid=""
  trap '[ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; rm -rf "$work"' EXIT
}
