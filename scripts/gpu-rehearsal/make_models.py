#!/usr/bin/env python3
"""Models for the GPU rehearsal, made offline with transformers from a config (random
weights, no download):

  python3 make_models.py OUT_DIR [SHAPE]

- OUT_DIR/chat: a Qwen2 causal LM, bf16. SHAPE `qwen05` (default) is Qwen2-0.5B's shape
  (24 layers, 896 wide, vocab 151936, ~1 GB); `smoke` a few-MB one for a CPU dry run.
  Tokenizer: a WordLevel vocabulary "t0".."t{V-1}" (so every id decodes to text), a
  plain chat template, no EOS (random weights would hit it at random).
- OUT_DIR/embed: a BERT encoder of all-MiniLM-L6-v2's shape (6 layers, 384 wide), f32,
  with a WordLevel tokenizer ([CLS] ... [SEP], padded batches).
"""
import json
import os
import sys

import torch

CHAT = {
    "qwen05": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                   num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2),
    "smoke": dict(vocab_size=1000, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def chat(out, shape):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, Qwen2Config
    s = CHAT[shape]
    cfg = Qwen2Config(max_position_embeddings=4096, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                      pad_token_id=None, **s)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.generation_config.eos_token_id = None
    m.save_pretrained(out)
    gc = os.path.join(out, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    v = s["vocab_size"]
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(v)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
                   "eos_token": None, "model_max_length": 4096,
                   "chat_template": TEMPLATE}, f)
    n = sum(p.numel() for p in m.parameters())
    print(json.dumps({"model": "chat", "shape": shape, "params": n}), flush=True)


def embed(out):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel
    v = 30522
    cfg = BertConfig(vocab_size=v, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512)
    torch.manual_seed(1)
    m = BertModel(cfg, add_pooling_layer=False).eval()
    m.save_pretrained(out)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    vocab.update({f"t{i}": i for i in range(4, v)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.save(os.path.join(out, "tokenizer.json"))
    print(json.dumps({"model": "embed", "params": sum(p.numel() for p in m.parameters())}),
          flush=True)


def reference_embeddings(model_dir, texts):
    """Mean-pooled, L2-normalised embeddings from transformers (what sentence-transformers
    computes for MiniLM), as the reference for the node's."""
    from tokenizers import Tokenizer
    from transformers import BertModel
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    m = BertModel.from_pretrained(model_dir).eval()
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        h = m(input_ids=ids, attention_mask=mask).last_hidden_state
    mf = mask.unsqueeze(-1).float()
    pooled = (h * mf).sum(1) / mf.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).tolist()


if __name__ == "__main__":
    root = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "reference":
        texts = json.loads(sys.argv[3])
        print(json.dumps(reference_embeddings(os.path.join(root, "embed"), texts)))
        sys.exit(0)
    shape = sys.argv[2] if len(sys.argv) > 2 else "qwen05"
    for name, fn in [("chat", lambda d: chat(d, shape)), ("embed", embed)]:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        fn(d)
