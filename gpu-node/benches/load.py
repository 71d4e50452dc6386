#!/usr/bin/env python3
"""Drives a running dayshift-node with N concurrent streaming chat requests (standard
library only, so it runs on the GPU machine too) and prints time to first token,
inter-token latency and decode tokens/s.

  python3 gpu-node/benches/load.py BASE_URL MODEL [--clients 1,8,32] [--max-tokens 64]

BASE_URL is e.g. http://127.0.0.1:8000. Requests use temperature 0 and a fixed prompt;
EOS may end a stream early (the tokens counted are the ones received).
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request


def one(base, model, max_tokens, prompt, out):
    body = json.dumps({
        "model": model, "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    stamps, tokens = [], 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
            elif ev["choices"] and ev["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    out.append((t0, stamps, tokens, time.perf_counter()))


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def run(base, model, n, max_tokens):
    out, threads = [], []
    for i in range(n):
        t = threading.Thread(target=one, args=(base, model, max_tokens, f"Tell me story {i}.", out))
        threads.append(t)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = [s[0] - a for a, s, _, _ in out if s]
    itl = [b - a for _, s, _, _ in out for a, b in zip(s, s[1:])]
    toks = sum(k for _, _, k, _ in out)
    per_stream = [k / (e - s[0]) for _, s, k, e in out if s and e > s[0] and k > 1]
    return {
        "clients": n, "tokens": toks, "wall_s": round(wall, 3),
        "ttft_p50_ms": round(pct(ttft, 50) * 1e3, 1), "ttft_p99_ms": round(pct(ttft, 99) * 1e3, 1),
        "itl_p50_ms": round(pct(itl, 50) * 1e3, 2), "itl_p99_ms": round(pct(itl, 99) * 1e3, 2),
        "tokens_per_s_total": round(toks / wall, 1),
        "tokens_per_s_per_stream": round(statistics.mean(per_stream), 1) if per_stream else None,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("model")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    for n in [int(x) for x in a.clients.split(",")]:
        print(json.dumps(run(a.base.rstrip("/"), a.model, n, a.max_tokens)), flush=True)
