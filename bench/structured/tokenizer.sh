#!/usr/bin/env bash
# Writes SmolLM2-135M-Instruct's tokenizer (tokenizer.json, tokenizer_config.json,
# chat_template.jinja) from the GGUF the CPU benchmark uses into DIR, for the GPU run
# (gpu.sh), where a random-weight model gets this real vocabulary.
#   bash bench/structured/tokenizer.sh DIR
# Needs: python3 with transformers and gguf (pip install gguf).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: tokenizer.sh DIR}"
gguf="$(bash scripts/fetch-smollm2.sh)"
mkdir -p "$out"
python3 - "$gguf" "$out" <<'PY'
import os, sys
from transformers import AutoTokenizer
gguf, out = sys.argv[1], sys.argv[2]
t = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
t.save_pretrained(out)
PY
ls "$out"
