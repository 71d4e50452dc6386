"""Median time to the first streamed byte, per target, over 50 sequential requests.

Usage: ttfb.py DIRECT_URL NGINX_URL DAYSHIFT_URL (env KEY: API key).
"""
import http.client
import os
import statistics
import sys
import time
from urllib.parse import urlparse

BODY = b'{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def ttfb(url: str, n: int = 50) -> tuple[float, float]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    first, total = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", BODY, {
            "Content-Type": "application/json",
            "Authorization": "Bearer " + os.environ["KEY"],
        })
        r = r_ = conn.getresponse()
        r.read1(1)
        first.append(time.perf_counter() - t0)
        r_.read()
        total.append(time.perf_counter() - t0)
    return statistics.median(first) * 1000, statistics.median(total) * 1000


for name, url in zip(["direct", "nginx", "dayshift"], sys.argv[1:]):
    f, t = ttfb(url)
    print(f"- {name}: first byte {f:.2f} ms, whole stream {t:.2f} ms")
