#!/usr/bin/env python3
"""Greedy-output checks of dayshift-node on the GPU (8 prompts of different lengths,
sent at once so that they decode in one batch):

  python3 bench/gpu/correctness.py nodes URL_A URL_B MODEL VOCAB   # same text from both
  python3 bench/gpu/correctness.py hf MODEL_DIR URL MODEL          # == transformers

`nodes`: the tiny test model on the CPU (f32) and on CUDA (f32) must give the same
32 greedy tokens. `hf`: the node (f32 on CUDA) against transformers' greedy `generate`
(f32 on CUDA, eager attention, TF32 off) on a random-weight model made by
make_models.py (its WordLevel tokenizer maps text back to ids); at the first
difference, if any, transformers' gap between its top two logits is reported (a tie
within rounding is not a bug).
"""
import json
import random
import sys
import threading
import urllib.request

STEPS = 32
DEV = "cuda" if __import__("torch").cuda.is_available() else "cpu"
LENGTHS = [3, 9, 17, 30, 41, 64, 100, 150]


def complete(url, model, ids, out):
    body = json.dumps({"model": model, "prompt": ids, "max_tokens": STEPS,
                       "temperature": 0}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            out[tuple(ids)] = json.loads(r.read())["choices"][0]["text"]
    except Exception as e:  # reported as a difference
        out[tuple(ids)] = f"ERROR {e}"


def batch(url, model, prompts):
    out, ts = {}, []
    for p in prompts:
        t = threading.Thread(target=complete, args=(url, model, p, out))
        t.start()
        ts.append(t)
    for t in ts:
        t.join()
    return [out.get(tuple(p)) for p in prompts]


def prompts(vocab, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(n)] for n in LENGTHS]


def nodes(url_a, url_b, model, vocab):
    ps = prompts(vocab)
    a, b = batch(url_a, model, ps), batch(url_b, model, ps)
    same = [x == y and x is not None for x, y in zip(a, b)]
    return {"check": "node A == node B greedy text", "prompts": len(ps),
            "equal": sum(same), "ok": all(same),
            "diffs": [{"len": len(p), "a": x, "b": y} for p, x, y, s in zip(ps, a, b, same) if not s]}


def hf(model_dir, url, model):
    import torch
    from transformers import AutoModelForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                             attn_implementation="eager").to(DEV).eval()
    ps = prompts(m.config.vocab_size, seed=1)
    got = batch(url, model, ps)
    cases, ok = [], True
    for p, text in zip(ps, got):
        ids = torch.tensor([p]).to(DEV)
        with torch.no_grad():
            y = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=STEPS,
                           min_new_tokens=STEPS, do_sample=False, eos_token_id=None,
                           pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        want = y.sequences[0, len(p):].tolist()
        mine = [int(w[1:]) for w in (text or "").split() if w[1:].isdigit()]
        first = next((i for i, (x, z) in enumerate(zip(want, mine)) if x != z),
                     None if len(mine) == len(want) else min(len(mine), len(want)))
        case = {"len": len(p), "match_tokens": first if first is not None else len(want)}
        if first is not None:
            ok = False
            if first < len(y.scores):
                top = torch.topk(y.scores[first][0].float(), 2).values.tolist()
                case["hf_top2_gap_at_first_diff"] = top[0] - top[1]
            case["want"] = want
            case["got"] = mine
        cases.append(case)
    return {"check": "node f32 CUDA == transformers f32 CUDA greedy", "tokens": STEPS,
            "prompts": len(ps), "equal": sum(1 for c in cases if c["match_tokens"] == STEPS),
            "ok": ok, "cases": cases}


if __name__ == "__main__":
    if sys.argv[1] == "nodes":
        r = nodes(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        r = hf(sys.argv[2], sys.argv[3], sys.argv[4])
    print(json.dumps(r))
