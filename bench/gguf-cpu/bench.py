#!/usr/bin/env python3
"""Decode speed of SmolLM2-135M-Instruct Q4_1 (GGUF) on this machine's CPU: dayshift-node
(through its OpenAI API) beside llama.cpp (llama-cpp-python, in process), same
file, same threads, same chat prompt, greedy, same number of new tokens asked for.

Usage: bench.py NODE_BASE_URL GGUF_PATH THREADS [RUNS] [MAX_TOKENS]
Prints one line per run and a summary with the ratio; run through bench/gguf-cpu/run.sh.
"""
import statistics
import sys
import time

import llama_cpp
from openai import OpenAI

base, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 128
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
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                      n_batch=512, verbose=False)
node = lambda n: node_run(c, n)  # noqa: E731
cpp = lambda n: cpp_run(llm, n)  # noqa: E731
node(8)  # warm-up
cpp(8)
a_res, b_res = [], []
for _ in range(runs):  # alternate, so that load from elsewhere hits both alike
    a_res.append(one(node))
    b_res.append(one(cpp))
print(f"SmolLM2-135M-Instruct Q4_1, CPU, {threads} threads, max_tokens {max_tokens}, greedy")
a = report("dayshift-node", a_res)
b = report("llama.cpp", b_res)
print(f"ratio dayshift-node / llama.cpp: {a / b:.2f}")
