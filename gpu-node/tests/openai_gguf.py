"""Asks a dayshift-node serving SmolLM2-135M-Instruct (GGUF) for the capital of France
with the official openai client, greedy, plain and streaming; the answer must name Paris.

Usage: python3 openai_gguf.py BASE_URL   (e.g. http://127.0.0.1:PORT/v1)
"""
import sys

from openai import OpenAI

c = OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=300)
assert [m.id for m in c.models.list()] == ["smollm2"]
# SmolLM2's own default system prompt (the template adds it when none is given) makes
# the Q4_1 model list Paris landmarks in French under llama.cpp as well; a plain system
# message gives the direct answer there and here. "Answer in one sentence." keeps the
# first token clear of a tie: without it the best two logits ("The", "La") lie 0.04-0.13
# apart, and a change in the order of a kernel's float sums (1e-7 of a GEMV's output)
# flips the answer to French; with it they lie 1.8 apart (2026-12-04).
msgs = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]
r = c.chat.completions.create(model="smollm2", messages=msgs, max_tokens=32, temperature=0)
answer = r.choices[0].message.content
print("answer:", repr(answer), r.usage)
assert "Paris" in answer, answer
assert r.usage.completion_tokens >= 1

text = ""
for chunk in c.chat.completions.create(model="smollm2", messages=msgs, max_tokens=32,
                                       temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
print("streamed:", repr(text))
assert text == answer, (text, answer)
print("ALL OK")
