#!/usr/bin/env python3
"""Random-weight models of realistic shape for the GPU benchmark, made offline with
transformers' from_config + save_pretrained (no download):

  python3 bench/gpu/make_models.py OUT_DIR [qwen05 llama1b llama8b]

- qwen05: Qwen2-0.5B's shape (24 layers, 896 wide, 14/2 heads, 4864 MLP, vocab 151936,
  tied embeddings, q/k/v bias), bf16.
- llama1b: Llama-3.2-1B's shape (16 layers, 2048 wide, 32/8 heads, 8192 MLP, vocab
  128256, tied, llama3 RoPE scaling), bf16.
- llama8b: Llama-3.1-8B's shape (32 layers, 4096 wide, 32/8 heads, 14336 MLP), bf16.
- llama8b2l: llama8b with 2 layers (head size 128 in a minute, for quick GPU checks);
  qwen3_8b2l, nemo12b2l: the same for qwen3_8b (q/k norms) and nemo12b.
- qwen3_8b: Qwen3-8B's shape (36 layers, 4096 wide, 32/8 heads of 128, q/k norms, 12288
  MLP, vocab 151936), bf16.
- nemo12b: Mistral-Nemo-12B's shape (40 layers, 5120 wide, 32/8 heads of 128, 14336 MLP,
  vocab 131072), bf16.

Context is cut to 4096 positions (the KV cache is sized from it). No EOS token: random
weights would hit it at random, and the benchmark wants fixed output lengths. The
tokenizer is a WordLevel vocabulary "t0".."t{V-1}" (whitespace split), so that every id
decodes to text and a text maps back to its ids.
"""
import json
import os
import sys

import torch

SHAPES = {
    "qwen05": dict(arch="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                   num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                   rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "llama1b": dict(arch="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                    head_dim=64, rope_theta=500000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=True,
                    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192}),
    "llama8b": dict(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    head_dim=128, rope_theta=500000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=False,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192}),
    # A few-MB model of the same kind, for checking the scripts on a CPU.
    "smoke": dict(arch="qwen2", vocab_size=1000, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
}
# Issue 18's shapes: Qwen3-8B (q/k norms, head size 128) and Mistral-Nemo-12B (head size
# 128 though 5120 / 32 = 160, vocab 131072).
SHAPES["qwen3_8b"] = dict(arch="qwen3", vocab_size=151936, hidden_size=4096,
                          intermediate_size=12288, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                          rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
SHAPES["nemo12b"] = dict(arch="mistral", vocab_size=131072, hidden_size=5120,
                         intermediate_size=14336, num_hidden_layers=40,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         sliding_window=None)
# llama8b's layers (head size 128, untied head), 2 of them: quick checks on a GPU.
SHAPES["llama8b2l"] = dict(SHAPES["llama8b"], num_hidden_layers=2)
SHAPES["nemo12b2l"] = dict(SHAPES["nemo12b"], num_hidden_layers=2)
SHAPES["qwen3_8b2l"] = dict(SHAPES["qwen3_8b"], num_hidden_layers=2)


def tokenizer(vocab, out):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
                   "eos_token": None, "model_max_length": 4096}, f)


def make(name, out):
    from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config,
                              Qwen3Config)
    s = dict(SHAPES[name])
    arch = s.pop("arch")
    cls = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}.get(
        arch, LlamaConfig)
    cfg = cls(max_position_embeddings=4096, bos_token_id=None, eos_token_id=None,
              pad_token_id=None, **s)
    if arch == "llama":
        cfg.attention_bias = False
        cfg.mlp_bias = False
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.generation_config.eos_token_id = None
    m.generation_config.bos_token_id = None
    m.generation_config.pad_token_id = None
    m.save_pretrained(out)
    # No generation_config.json: it would only repeat "no EOS".
    gc = os.path.join(out, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    tokenizer(cfg.vocab_size, out)
    n = sum(p.numel() for p in m.parameters())
    print(json.dumps({"model": name, "params": n, "bytes": n * 2}), flush=True)
    del m
    torch.cuda.empty_cache()


if __name__ == "__main__":
    root = sys.argv[1]
    for name in sys.argv[2:] or ["qwen05", "llama1b"]:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        make(name, d)
