#!/usr/bin/env python3
"""llama.cpp's reading of GGUF files written by `dayshift-node quantize`: for each file,
its sha256, and for each prompt the token ids llama.cpp's tokenizer gives, the logits
after the prompt (rounded to 1e-5), its first 16 greedy tokens, and at each step the gap
between the best and second-best logit (a small gap is a near-tie that a different
summation order may flip).
gpu-node/tests/it/gguf_quantize.rs writes the same files and compares.

Run (needs `pip install llama-cpp-python numpy`):
    B=target/release/dayshift-node; D=$(mktemp -d)
    $B make-test-model $D/wide --wide
    for t in q4_k_m q5_k_m q8_0; do $B quantize $D/wide -t $t; done
    python3 gpu-node/reference/gguf/make_quantize_reference.py $D/wide.*.gguf \
        > gpu-node/reference/gguf/quantize_reference.json

The Gemma 3 reference (gpu-node/tests/it/gguf_gemma3.rs) is made the same way:
    $B make-test-model $D/gemma3 --arch gemma3_text --wide
    for t in f16 q4_k; do $B quantize $D/gemma3 -t $t; done
    python3 gpu-node/reference/gguf/make_quantize_reference.py $D/gemma3.F16.gguf \
        $D/gemma3.Q4_K.gguf > gpu-node/reference/gguf/gemma3_quantize_reference.json
"""
import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np

PROMPTS = [
    "The capital of France is",
    "Hello! How are you today?",
    "fn main() { println!(\"hello\"); }",
    "Once upon a time there was a little model",
]
STEPS = 16


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def one(path):
    # f32 KV cache like dayshift-node's on the CPU (llama.cpp's default f16 cache alone
    # moves these logits by ~0.06).
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, seed=0,
                          logits_all=True, type_k=0, type_v=0)
    cases = []
    for text in PROMPTS:
        toks = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        out = []
        for t in llm.generate(toks, temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                              repeat_penalty=1.0, reset=True):
            out.append(int(t))
            if len(out) == STEPS:
                break
        llm.reset()
        llm.eval(toks + out)
        scores = np.array(llm.scores[: llm.n_tokens])
        margins = []
        for i in range(STEPS):
            row = np.sort(scores[len(toks) - 1 + i])[::-1]
            margins.append(float(row[0] - row[1]))
        last = [round(float(x), 5) for x in scores[len(toks) - 1]]
        cases.append({"text": text, "ids": [int(t) for t in toks], "logits": last,
                      "greedy": out, "margins": [round(m, 5) for m in margins]})
    return {"file": os.path.basename(path), "sha256": sha256(path), "cases": cases}


print(json.dumps({"llama_cpp_python": llama_cpp.__version__,
                  "files": [one(p) for p in sys.argv[1:]]}, indent=1))
