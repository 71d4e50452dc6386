#!/usr/bin/env python3
"""One chat of TURNS turns against a dayshift-node (see run.sh): each turn sends the
whole conversation (system prompt, earlier user messages and the node's own answers, a
new user message of WORDS words), streams the answer (ANSWER tokens, greedy) and
records the time to the first streamed token and the usage's cached prompt tokens.

Usage: bench.py BASE_URL LABEL TURNS WORDS ANSWER   (standard library only)
"""
import json
import sys
import time
import urllib.request

base, label = sys.argv[1], sys.argv[2]
turns, words, answer = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
TOPICS = ["budget", "schedule", "hiring", "travel", "audit", "training", "security", "office"]


def message(turn):
    # Varied, plain words: a new user message that shares nothing with the last one.
    t = TOPICS[turn % len(TOPICS)]
    base_words = f"please summarise the {t} notes for team {turn} and list open points".split()
    return " ".join(base_words[i % len(base_words)] + ("," if i % 13 == 12 else "")
                    for i in range(words))


def ask(messages):
    body = json.dumps({"model": "m", "messages": messages, "max_tokens": answer,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    ttft, text, usage = None, [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            ev = json.loads(data)
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices", []):
                d = ch.get("delta", {}).get("content")
                if d:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text.append(d)
    return ttft or (time.perf_counter() - t0), "".join(text), usage


messages = [{"role": "system", "content": "You are the office assistant. Answer briefly."}]
total = 0.0
for turn in range(turns):
    messages.append({"role": "user", "content": message(turn)})
    ttft, text, usage = ask(messages)
    messages.append({"role": "assistant", "content": text})
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    print(f"{label:5s} turn {turn + 1}: prompt {usage['prompt_tokens']:5d} tokens, "
          f"cached {cached:5d}, time to first token {ttft:6.3f} s")
    if turn > 0:
        total += ttft
print(f"sum of turns 2..{turns}: {total:.3f} s")
