#!/usr/bin/env python3
"""The baseline beside dayshift-node's figures, on the same GPU and the same weights:

  python3 bench/gpu/hf_baseline.py bandwidth
  python3 bench/gpu/hf_baseline.py generate MODEL_DIR --batches 1,32 --prompt 128 --out 128

`bandwidth` measures device-to-device copy bandwidth (bytes read + bytes written per
second, a 1 GiB buffer, best of 20) and prints it as JSON. `generate` runs
transformers' `generate` (bf16, greedy, no EOS so every sequence runs `--out` tokens)
and prints decode tokens/s per batch size: (time of `--out` tokens - time of 1 token)
gives the decode time of `--out - 1` steps.
"""
import argparse
import json
import time

import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def bandwidth():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        best = min(best, s.elapsed_time(e) / 1e3)
    return {"d2d_copy_bytes": n, "d2d_seconds": best,
            "d2d_bandwidth_gbs": round(2 * n / best / 1e9, 1),
            "device": torch.cuda.get_device_name(0)}


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def weight_bytes(model):
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def generate(model_dir, batches, prompt, out, reps):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(DEV).eval()
    vocab = m.config.vocab_size
    g = torch.Generator().manual_seed(0)
    res = {"model": model_dir, "weight_bytes": weight_bytes(m), "prompt": prompt, "out": out,
           "transformers_batches": []}

    def timed(ids, n):
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            y = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
        sync()
        assert y.shape[1] == ids.shape[1] + n, y.shape
        return time.perf_counter() - t

    for b in batches:
        ids = torch.randint(0, vocab, (b, prompt), generator=g).to(DEV)
        timed(ids, 4)  # warm-up
        one = min(timed(ids, 1) for _ in range(reps))
        full = min(timed(ids, out) for _ in range(reps))
        dec = (out - 1) / max(full - one, 1e-9)
        res["transformers_batches"].append({
            "batch": b, "ttft_ms": round(one * 1e3, 1),
            "decode_tokens_per_s_per_stream": round(dec, 1),
            "decode_tokens_per_s_total": round(dec * b, 1),
            "peak_gpu_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20) if DEV == "cuda" else None,
        })
        print(json.dumps(res["transformers_batches"][-1]), flush=True)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["bandwidth", "generate"])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--out", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args()
    if a.what == "bandwidth":
        r = bandwidth()
    else:
        r = generate(a.model, [int(x) for x in a.batches.split(",")], a.prompt, a.out, a.reps)
    print(json.dumps(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
