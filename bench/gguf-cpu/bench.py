#!/usr/bin/env python3
"""Decode speed of SmolLM2-135M-Instruct Q4_1 (GGUF) on this machine's CPU: dayshift-node
(through its OpenAI API, streaming) beside llama.cpp (llama-cpp-python, in process), same
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


def timed(stream):
    """(tokens after the first, seconds from first to last token, time to first token)."""
    t0 = time.perf_counter()
    stamps = []
    for piece in stream:
        if piece:
            stamps.append(time.perf_counter())
    if len(stamps) < 2:
        return 0, 0.0, 0.0
    return len(stamps) - 1, stamps[-1] - stamps[0], stamps[0] - t0


def node_run(c, n):
    def gen():
        for ch in c.chat.completions.create(model="smollm2", messages=MSGS, max_tokens=n,
                                            temperature=0, stream=True):
            # One chunk per token (the node sends a delta for every generated token).
            if ch.choices:
                yield ch.choices[0].delta.content is not None or ch.choices[0].finish_reason
    return timed(gen())


def cpp_run(llm, n):
    def gen():
        for ch in llm.create_chat_completion(messages=MSGS, max_tokens=n, temperature=0.0,
                                             top_k=1, stream=True):
            d = ch["choices"][0]["delta"]
            yield "content" in d
    return timed(gen())


def report(name, results):
    rates = [k / s for k, s, _ in results if s > 0]
    ttft = [t for _, _, t in results]
    toks = [k + 1 for k, _, _ in results]
    med = statistics.median(rates)
    print(f"{name:14s} decode {med:7.1f} tok/s (median of {len(rates)}: "
          + ", ".join(f"{r:.1f}" for r in rates)
          + f"), tokens {toks}, first token {statistics.median(ttft) * 1000:.0f} ms")
    return med


c = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                      n_batch=512, verbose=False)
node_run(c, 8)
cpp_run(llm, 8)
node, cpp = [], []
for i in range(runs):
    node.append(node_run(c, max_tokens))
    cpp.append(cpp_run(llm, max_tokens))
print(f"SmolLM2-135M-Instruct Q4_1, CPU, {threads} threads, max_tokens {max_tokens}, greedy")
a = report("dayshift-node", node)
b = report("llama.cpp", cpp)
print(f"ratio dayshift-node / llama.cpp: {a / b:.2f}")
