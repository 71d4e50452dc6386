#!/usr/bin/env python3
"""Drives a running dayshift-node with N concurrent streaming /v1/completions clients
(standard library only), fixed prompt and output lengths (token-id prompts, greedy, the
bench models have no EOS), and prints one JSON line per N: time to first token and
inter-token latency (p50, p99), decode tokens/s per stream and in total, and the
node's peak GPU memory (nvidia-smi, polled while the clients run).

  python3 bench/gpu/drive.py BASE_URL MODEL --vocab V [--clients 1,8,32,128]
      [--prompt 128] [--out 128] [--pid NODE_PID]
"""
import argparse
import http.client
import json
import random
import statistics
import subprocess
import threading
import time
import urllib.parse


def one(url, model, prompt_ids, out_len, res):
    u = urllib.parse.urlparse(url)
    body = json.dumps({
        "model": model, "prompt": prompt_ids, "max_tokens": out_len, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    })
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        res.append({"error": f"{r.status} {r.read()[:300]!r}"})
        return
    stamps, tokens, text = [], 0, []
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        now = time.perf_counter()
        ev = json.loads(line[6:])
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
        if ev.get("choices") and ev["choices"][0].get("text"):
            stamps.append(now)
            text.append(ev["choices"][0]["text"])
    res.append({"t0": t0, "stamps": stamps, "tokens": tokens, "end": time.perf_counter(),
                "text": "".join(text)})


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class GpuMem(threading.Thread):
    """Peak used memory (MiB) of one process on the GPU, from nvidia-smi."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = str(pid), 0, False

    def run(self):
        while not self.stop:
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory",
                     "--format=csv,noheader,nounits"], capture_output=True, text=True,
                    timeout=10).stdout
                for line in out.splitlines():
                    p, m = [x.strip() for x in line.split(",")]
                    if p == self.pid:
                        self.peak = max(self.peak, int(m))
            except Exception:
                pass
            time.sleep(0.2)


def run(url, model, n, prompt_len, out_len, vocab, seed):
    rng = random.Random(seed)
    prompts = [[rng.randrange(vocab) for _ in range(prompt_len)] for _ in range(n)]
    res, threads = [], []
    for p in prompts:
        threads.append(threading.Thread(target=one, args=(url, model, p, out_len, res)))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [r["error"] for r in res if "error" in r]
    ok = [r for r in res if "error" not in r]
    ttft = [r["stamps"][0] - r["t0"] for r in ok if r["stamps"]]
    itl = [b - a for r in ok for a, b in zip(r["stamps"], r["stamps"][1:])]
    per_stream = [(len(r["stamps"]) - 1) / (r["stamps"][-1] - r["stamps"][0])
                  for r in ok if len(r["stamps"]) > 1 and r["stamps"][-1] > r["stamps"][0]]
    toks = sum(r["tokens"] for r in ok)
    # Decode-only total: tokens after each stream's first, over the span in which
    # streams were decoding (first first-token to last last-token).
    first = min((r["stamps"][0] for r in ok if r["stamps"]), default=t0)
    last = max((r["stamps"][-1] for r in ok if r["stamps"]), default=t0)
    dec_toks = sum(max(len(r["stamps"]) - 1, 0) for r in ok)
    ms = lambda v: None if v is None else round(v * 1e3, 2)
    return {
        "clients": n, "prompt": prompt_len, "out": out_len, "tokens": toks,
        "errors": errors[:3], "short_streams": sum(1 for r in ok if r["tokens"] != out_len),
        "wall_s": round(wall, 3),
        "ttft_p50_ms": ms(pct(ttft, 50)), "ttft_p99_ms": ms(pct(ttft, 99)),
        "itl_p50_ms": ms(pct(itl, 50)), "itl_p99_ms": ms(pct(itl, 99)),
        "decode_tokens_per_s_per_stream": round(statistics.mean(per_stream), 1) if per_stream else None,
        "decode_tokens_per_s_total": round(dec_toks / (last - first), 1) if last > first else None,
        "tokens_per_s_total_wall": round(toks / wall, 1),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--clients", default="1,8,32,128")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--out", type=int, default=128)
    ap.add_argument("--pid", type=int)
    a = ap.parse_args()
    url = a.url.rstrip("/")
    mem = None
    if a.pid:
        mem = GpuMem(a.pid)
        mem.start()
    run(url, a.model, 2, 16, 8, a.vocab, 99)  # warm-up: kernels load, cuBLAS plans
    for n in [int(x) for x in a.clients.split(",")]:
        r = run(url, a.model, n, a.prompt, a.out, a.vocab, n)
        if mem:
            r["peak_gpu_mem_mib"] = mem.peak
        print(json.dumps(r), flush=True)
    if mem:
        mem.stop = True
