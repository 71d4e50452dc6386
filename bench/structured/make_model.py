#!/usr/bin/env python3
"""A random-weight Llama with SmolLM2's real tokenizer, for the GPU run of the
constrained-decoding benchmark (no model file travels: 64 MiB limit, no hub there).

  python3 make_model.py TOKENIZER_DIR OUT_DIR SHAPE

TOKENIZER_DIR holds SmolLM2-135M-Instruct's tokenizer.json, tokenizer_config.json and
chat_template.jinja (written by `tokenizer.sh` from the GGUF the CPU run uses), so the
grammar engine sees the real 49,152-token vocabulary. SHAPE: `smollm2` (SmolLM2-135M's
shape) or `1b` (Llama-3.2-1B's layer shape with this vocabulary). bf16, EOS removed from
the generation config (random weights would hit it at random).
"""
import json
import os
import shutil
import sys

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

SHAPES = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8),
}

tok_dir, out, shape = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = LlamaConfig(vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1,
                  eos_token_id=None, pad_token_id=None, **SHAPES[shape])
torch.manual_seed(0)
with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
m.generation_config.eos_token_id = None
m.save_pretrained(out)
gc = os.path.join(out, "generation_config.json")
if os.path.exists(gc):
    os.remove(gc)
for f in ("tokenizer.json", "chat_template.jinja"):
    shutil.copy(os.path.join(tok_dir, f), out)
with open(os.path.join(tok_dir, "tokenizer_config.json")) as f:
    tc = json.load(f)
tc["eos_token"] = None  # no EOS: both conditions run to max_tokens
with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
    json.dump(tc, f)
print(json.dumps({"shape": shape, "params": sum(p.numel() for p in m.parameters())}))
