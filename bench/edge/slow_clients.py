#!/usr/bin/env python3
"""Slow and greedy clients against the ingress, for bench/edge/run.sh.

usage: slow_clients.py HOST:PORT SECONDS PER_KIND FLOOD

Each kind runs PER_KIND raw-socket clients from its own loopback source address
(127.0.0.2 …), reconnecting for SECONDS; each connection records how long the ingress
took to close it and the status line it answered, if any:
  silent       connects, sends nothing
  slow_header  a header line every 0.5 s, never the end of the head
  half_body    announces 100 bytes of body, sends 5
  slow_body    announces 100 bytes, sends one every 0.5 s
  idle         one request, then keeps the connection open
flood (from 127.0.0.7): opens FLOOD connections at once and holds them; counts how many
the ingress closes at once (the per-address limit). Prints one JSON object.
"""
import json
import socket
import sys
import threading
import time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
seconds = float(sys.argv[2])
per_kind = int(sys.argv[3])
flood = int(sys.argv[4])
end = time.monotonic() + seconds
lock = threading.Lock()
results = {}


def connect(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect((host, port))
    return s


def wait_close(s, limit=120.0):
    """Reads until EOF; returns (seconds waited, first line of what came)."""
    t = time.monotonic()
    s.settimeout(limit)
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
    except (ConnectionResetError, socket.timeout):
        pass
    return time.monotonic() - t, got.split(b"\r\n", 1)[0].decode(errors="replace")


def trickle(s, lines, every):
    """Sends one line every `every` s until the peer closes; returns seconds taken."""
    t = time.monotonic()
    s.settimeout(every)
    for line in lines:
        try:
            s.sendall(line)
            b = s.recv(4096)
            if not b:
                break
            return time.monotonic() - t, b.split(b"\r\n", 1)[0].decode(errors="replace")
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    return time.monotonic() - t, ""


def one(kind, src):
    s = connect(src)
    t0 = time.monotonic()
    if kind == "silent":
        took, status = wait_close(s)
    elif kind == "slow_header":
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        took, status = trickle(s, (b"X-Slow-%d: y\r\n" % i for i in range(10**6)), 0.5)
        if status:
            took2, _ = wait_close(s)
            took += took2
    elif kind == "half_body":
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"mod")
        took, status = wait_close(s)
    elif kind == "slow_body":
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        took, status = trickle(s, (b" " for _ in range(100)), 0.5)
        if status:
            wait_close(s)
    elif kind == "idle":
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        first = s.recv(4096)
        t0 = time.monotonic()
        took, _ = wait_close(s)
        status = first.split(b"\r\n", 1)[0].decode(errors="replace") + " then idle"
    s.close()
    with lock:
        r = results.setdefault(kind, {"connections": 0, "max_close_s": 0.0, "min_close_s": 1e9, "statuses": {}})
        r["connections"] += 1
        r["max_close_s"] = round(max(r["max_close_s"], took), 3)
        r["min_close_s"] = round(min(r["min_close_s"], took), 3)
        r["statuses"][status or "(closed, no answer)"] = r["statuses"].get(status or "(closed, no answer)", 0) + 1


def worker(kind, src):
    while time.monotonic() < end:
        try:
            one(kind, src)
        except OSError as e:
            with lock:
                results.setdefault("errors", []).append(f"{kind}: {e}")
            time.sleep(0.1)


def flooder():
    socks = []
    for _ in range(flood):
        try:
            socks.append(connect("127.0.0.7"))
        except OSError:
            break
    time.sleep(0.5)
    closed_at_once = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed_at_once += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed_at_once += 1
    results["flood"] = {"opened": len(socks), "closed_at_once": closed_at_once}
    for s in socks:
        s.close()


kinds = ["silent", "slow_header", "half_body", "slow_body", "idle"]
threads = [threading.Thread(target=flooder)]
for i, kind in enumerate(kinds):
    for _ in range(per_kind):
        threads.append(threading.Thread(target=worker, args=(kind, f"127.0.0.{2 + i}")))
for t in threads:
    t.start()
for t in threads:
    t.join()
if "errors" in results:
    results["errors"] = results["errors"][:5] + [f"… {len(results['errors'])} in all"]
print(json.dumps(results, indent=1, sort_keys=True))
