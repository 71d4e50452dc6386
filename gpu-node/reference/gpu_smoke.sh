#!/usr/bin/env bash
# One CUDA run of dayshift-node on the GPU machine (see ../shared/GPU.md): the tiny test
# model in f32 (greedy chat answer, to compare with the CPU's) and a Qwen2-shaped random
# model (~0.4B, bf16, made here with transformers) with one chat completion and a short
# load run. Expects .gpu/dayshift-node (stripped release build with --features cuda) and
# .gpu/tiny (from `dayshift-node make-test-model`); a gzipped .gpu/dayshift-node.gz works too.
# Results go to $OUT.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
B=$PWD/.gpu/dayshift-node
if [ -f "$B.gz" ]; then gunzip -c "$B.gz" > /tmp/dayshift-node && chmod +x /tmp/dayshift-node && B=/tmp/dayshift-node; fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$B --version | tee -a "$OUT/gpu.txt"

serve() { # name dir port dtype
  cat > /tmp/$1.toml <<CFG
node_id = "gpu-smoke"
listen = "127.0.0.1:$3"
[tls]
mode = "off"
[engine]
device = "cuda"
[[models]]
name = "$1"
source = { type = "local", path = "$2" }
dtype = "$4"
CFG
  $B serve -c /tmp/$1.toml 2> "$OUT/$1-node.log" &
  echo $! > /tmp/$1.pid
  for i in $(seq 1 600); do
    curl -sf http://127.0.0.1:$3/health >/dev/null && return 0
    kill -0 "$(cat /tmp/$1.pid)" 2>/dev/null || { echo "node $1 died"; tail -20 "$OUT/$1-node.log"; return 1; }
    sleep 0.2
  done
  return 1
}
chat() { # port model file
  curl -s http://127.0.0.1:$1/v1/chat/completions -H 'content-type: application/json' \
    -d "{\"model\":\"$2\",\"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}],\"max_tokens\":24,\"temperature\":0}" \
    | tee "$OUT/$3"; echo
}
stop() { kill -TERM "$(cat /tmp/$1.pid)"; wait "$(cat /tmp/$1.pid)"; echo "$1 exit=$?" | tee -a "$OUT/gpu.txt"; }

if serve tiny "$PWD/.gpu/tiny" 18001 f32; then
  chat 18001 tiny tiny_cuda_chat.json
  curl -s http://127.0.0.1:18001/metrics | grep -E "kv_cache_total|step_sequences_max" >> "$OUT/gpu.txt"
  stop tiny
fi

python3 - <<'PY'
import torch, shutil
from transformers import Qwen2Config, Qwen2ForCausalLM
torch.manual_seed(0)
cfg = Qwen2Config(vocab_size=380, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, eos_token_id=379)
m = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained("/tmp/qwen")
for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
    shutil.copy(f".gpu/tiny/{f}", f"/tmp/qwen/{f}")
print("qwen params", sum(p.numel() for p in m.parameters()))
PY
if serve qwen /tmp/qwen 18002 bf16; then
  chat 18002 qwen qwen_cuda_chat.json
  python3 gpu-node/benches/load.py http://127.0.0.1:18002 qwen --clients 1,8,32 --max-tokens 64 | tee "$OUT/qwen_load.jsonl"
  curl -s http://127.0.0.1:18002/metrics | grep -E "kv_cache_total|step_sequences_max" >> "$OUT/gpu.txt"
  nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/gpu.txt"
  stop qwen
fi
cat "$OUT/gpu.txt"
