#!/usr/bin/env python3
"""Markdown table of one bench/gpu/run.sh run: python3 bench/gpu/table.py OUT_DIR MODEL..."""
import glob
import json
import os
import re
import sys


# Issue 17's batch-1 targets, as shares of the bandwidth limit.
BATCH1_TARGET = {"llama1b": " (target ≥ 60%)", "llama8b": " (target ≥ 70%)",
                 "qwen05": " (target ≥ 45%)"}

def jl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def f(v, nd=1):
    return "–" if v is None else f"{v:.{nd}f}"


def main(out, models):
    bw = json.load(open(os.path.join(out, "bandwidth.json")))
    dev = open(os.path.join(out, "device.txt")).read().strip().splitlines()
    print(f"Device: {dev[1] if len(dev) > 1 else dev}; D2D copy bandwidth "
          f"{bw['d2d_bandwidth_gbs']} GB/s (read + write, 1 GiB copy).\n")
    switches = [l.removeprefix("bench switch: ") for l in dev if l.startswith("bench switch: ")]
    if switches:
        print("Bench switches: " + ", ".join(f"`{x}`" for x in switches) + "\n")
    for m in models:
        hf_path = os.path.join(out, f"hf_{m}.json")
        hf = json.load(open(hf_path)) if os.path.exists(hf_path) else {"transformers_batches": []}
        node = jl(os.path.join(out, f"node_{m}.jsonl"))
        wb = hf.get("weight_bytes")
        limit = bw["d2d_bandwidth_gbs"] * 1e9 / wb if wb else None
        hfb = {r["batch"]: r for r in hf["transformers_batches"]}
        print(f"### {m} ({wb / 1e9:.2f} GB of bf16 weights)" if wb else f"### {m}")
        print(f"prompt {node[0]['prompt'] if node else '?'} tokens, output "
              f"{node[0]['out'] if node else '?'} tokens per stream, greedy, no EOS\n")
        print("| N | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | decode tok/s per stream "
              "| decode tok/s total | node peak GPU MiB | transformers decode tok/s total (same batch) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in node:
            h = hfb.get(r["clients"], {})
            print(f"| {r['clients']} | {f(r['ttft_p50_ms'])} | {f(r['ttft_p99_ms'])} | "
                  f"{f(r['itl_p50_ms'], 2)} | {f(r['itl_p99_ms'], 2)} | "
                  f"{f(r['decode_tokens_per_s_per_stream'])} | {f(r['decode_tokens_per_s_total'])} | "
                  f"{r.get('peak_gpu_mem_mib', '–')} | {f(h.get('decode_tokens_per_s_total'))} |")
        by = {r["clients"]: r for r in node}
        n1 = by.get(1, {}).get("decode_tokens_per_s_per_stream")
        n32 = by.get(32, {}).get("decode_tokens_per_s_total")
        hf1 = hfb.get(1, {}).get("decode_tokens_per_s_per_stream")
        print()
        if limit:
            print(f"- bandwidth limit, batch 1: {limit:.0f} tok/s "
                  f"(weights {wb / 1e9:.3f} GB ÷ {bw['d2d_bandwidth_gbs']} GB/s); "
                  f"node batch 1 = {f(n1)} tok/s = **{100 * n1 / limit:.1f}%** of it"
                  f"{BATCH1_TARGET.get(m, '')}"
                  if n1 else "- node batch 1: no figure")
        if n1 and hf1:
            print(f"- transformers batch 1: {hf1:.1f} tok/s; node / transformers = **{n1 / hf1:.1f}×** (target ≥ 5×)")
        if n1 and n32:
            print(f"- node total tok/s N=32 = **{f(n32)}** (llama1b target ≥ 10,000), "
                  f"{n32 / n1:.1f}× batch 1")
        eager = {r["clients"]: r for r in jl(os.path.join(out, f"node_{m}_eager.jsonl"))}
        if eager:
            parts = []
            for n, e in sorted(eager.items()):
                g = by.get(n, {}).get("decode_tokens_per_s_total")
                t = e.get("decode_tokens_per_s_total")
                if g and t:
                    parts.append(f"N={n}: {t:.1f} → {g:.1f} tok/s (**{g / t:.2f}×**)")
            print("- CUDA graphs vs eager decode (`cuda_graphs = false`, same run), total tok/s: "
                  + "; ".join(parts))
        for tag, name in (("", "graphs"), ("-eager", "eager")):
            lg = os.path.join(out, f"{m}-cuda-bf16{tag}-node.log")
            if not os.path.exists(lg):
                continue
            text = re.sub(r"\x1b\[[0-9;]*m", "", open(lg).read())
            w = re.search(r"engine warmed up secs=([0-9.]+)", text)
            c = re.search(r"decode steps captured as CUDA graphs secs=([0-9.]+) buckets=(\S+)", text)
            if w:
                extra = (f"; graphs captured in {float(c.group(1)):.2f} s, buckets {c.group(2)}"
                         if c else "")
                print(f"- {name} node, fresh driver cache (CUDA_CACHE_DISABLE=1): warm-up "
                      f"{float(w.group(1)):.1f} s (target ≤ 5 s){extra}")
        errs = sum(len(r.get("errors", [])) + r.get("short_streams", 0) for r in node)
        if errs:
            print(f"- streams with errors or short output: {errs}")
        logs = glob.glob(os.path.join(out, f"{m}-cuda-bf16-node.log"))
        timings = []
        for lg in logs:
            for line in open(lg):
                if "engine timings" in line:
                    timings.append(re.sub(r"^.*?engine timings \(per step\)\s*", "",
                                          re.sub(r"\x1b\[[0-9;]*m", "", line.strip())))
        if timings:
            print("- engine timings (per step; one line per burst of work or 2 s of steps, in order: warm-up, N = 1, 8, 32, 128):")
            for t in timings:
                print(f"  - `{t}`")
        print()
    for c in sorted(glob.glob(os.path.join(out, "check_*.json"))):
        r = jl(c)
        if r:
            r = r[-1]
            print(f"- {os.path.basename(c)}: {r['check']}: {r['equal']}/{r['prompts']} prompts equal "
                  f"-> {'OK' if r['ok'] else 'DIFFERS'}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
