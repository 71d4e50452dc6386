#!/usr/bin/env python3
"""Decode speed of SmolLM2-135M-Instruct Q4_1 (GGUF) on this machine's CPU: dayshift-node
(through its OpenAI API) beside llama.cpp (llama-cpp-python, in process), same
file, same threads, same chat prompt, greedy, same number of new tokens asked for.

Then time to first token of a long prompt (PROMPT_WORDS words, ~3,000 tokens by default):
the same chat request with max_tokens 1 to both, llama.cpp's KV cache reset before each
run (so neither side reuses a cached prefix), prefill in batches of 256 tokens for
llama.cpp (n_batch; the node's prefill_chunk_tokens default is also 256).

Usage: bench.py NODE_BASE_URL GGUF_PATH THREADS [RUNS] [MAX_TOKENS] [PROMPT_WORDS]
Prints one line per run and a summary with the ratio; run through bench/gguf-cpu/run.sh.
"""
import os
import statistics
import sys
import time

import llama_cpp
from openai import OpenAI

base, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 128
prompt_words = int(sys.argv[6]) if len(sys.argv) > 6 else 2300
MSGS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a small robot who learns to paint the sky."},
]


def node_run(c, n):
    t0 = time.perf_counter()
    r = c.chat.completions.create(model="smollm2", messages=MSGS, max_tokens=n, temperature=0)
    return r.usage.completion_tokens, time.perf_counter() - t0


def cpp_run(llm, n):
    t0 = time.perf_counter()
    r = llm.create_chat_completion(messages=MSGS, max_tokens=n, temperature=0.0, top_k=1)
    return r["usage"]["completion_tokens"], time.perf_counter() - t0


def one(fn):
    """Decode tokens/s = (tokens - 1) / (time for max_tokens - time for 1 token): the
    prompt's prefill (and any prompt cache) counts in both and cancels out."""
    _, t1 = fn(1)
    k, tn = fn(max_tokens)
    return (k - 1) / (tn - t1), t1, k


def report(name, res):
    rates = [r for r, _, _ in res]
    med = statistics.median(rates)
    print(f"{name:14s} decode {med:7.1f} tok/s (median of {len(res)}: "
          + ", ".join(f"{r:.1f}" for r in rates)
          + f"), tokens {[k for _, _, k in res]}, 1-token request "
          + f"{statistics.median(t for _, t, _ in res) * 1000:.0f} ms")
    return med


c = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)
llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                      n_batch=256, n_ubatch=256, verbose=False)
node = lambda n: node_run(c, n)  # noqa: E731
cpp = lambda n: cpp_run(llm, n)  # noqa: E731
node(8)  # warm-up
cpp(8)
a_res, b_res = [], []
for _ in range(runs):  # alternate, so that load from elsewhere hits both alike
    a_res.append(one(node))
    b_res.append(one(cpp))
print(f"{os.path.basename(path)}, CPU, {threads} threads, max_tokens {max_tokens}, greedy")
a = report("dayshift-node", a_res)
b = report("llama.cpp", b_res)
print(f"ratio dayshift-node / llama.cpp: {a / b:.2f}")


# Time to first token of a long prompt.
WORDS = ("office hours rented servers data stays in Europe the model answers questions about "
         "contracts invoices schedules and holidays while people work 2026 Köln Grüße").split()
long_text = " ".join(WORDS[(i * 7 + i // 13) % len(WORDS)] for i in range(prompt_words))
LONG = [{"role": "user", "content": "Summarise this text: " + long_text}]


def node_ttft():
    t0 = time.perf_counter()
    r = c.chat.completions.create(model="smollm2", messages=LONG, max_tokens=1, temperature=0)
    return time.perf_counter() - t0, r.usage.prompt_tokens


def cpp_ttft():
    llm.reset()  # no prefix reuse from the previous run
    t0 = time.perf_counter()
    r = llm.create_chat_completion(messages=LONG, max_tokens=1, temperature=0.0, top_k=1)
    return time.perf_counter() - t0, r["usage"]["prompt_tokens"]


a_t, b_t = [], []
for _ in range(runs):
    a_t.append(node_ttft())
    b_t.append(cpp_ttft())
ta = statistics.median(t for t, _ in a_t)
tb = statistics.median(t for t, _ in b_t)
print(f"time to first token, prompt of {a_t[0][1]} tokens (llama.cpp counts {b_t[0][1]}):")
print(f"  dayshift-node {ta:6.2f} s ({a_t[0][1] / ta:.0f} tok/s; runs "
      + ", ".join(f"{t:.2f}" for t, _ in a_t) + ")")
print(f"  llama.cpp     {tb:6.2f} s ({b_t[0][1] / tb:.0f} tok/s; runs "
      + ", ".join(f"{t:.2f}" for t, _ in b_t) + ")")
print(f"ratio (llama.cpp time / dayshift-node time, higher is better for dayshift): {tb / ta:.2f}")
