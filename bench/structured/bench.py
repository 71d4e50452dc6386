"""Decode tokens/s with and without a JSON schema at N = 1 and N = 32 (see run.sh).

  python3 bench.py BASE_URL RUNS MAX_TOKENS [MODEL]
"""

import concurrent.futures as cf
import statistics
import sys
import time

import openai

base, runs, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MODEL = sys.argv[4] if len(sys.argv) > 4 else "smollm2"
client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
# Long enough output either way: an array of at least 40 small objects.
SCHEMA = {
    "type": "array", "minItems": 40,
    "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 999},
        "name": {"type": "string", "maxLength": 8},
        "ok": {"type": "boolean"}},
        "required": ["id", "name", "ok"], "additionalProperties": False},
}
MSGS = [{"role": "user", "content": "List forty products with an id, a short name and whether they are in stock."}]


def one(i, schema, temperature):
    extra = {}
    if schema:
        extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "list", "schema": SCHEMA, "strict": True}}
    r = client.chat.completions.create(
        model=MODEL, messages=MSGS, max_tokens=max_tokens, temperature=temperature, seed=i, **extra)
    return r.usage.completion_tokens


def batch(n, schema, temperature):
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as ex:
        toks = sum(ex.map(lambda i: one(i, schema, temperature), range(n)))
    return toks / (time.perf_counter() - t), toks


one(0, True, 0.8)  # warm: the grammar engine's token tables are built on first use
one(0, False, 0.8)
# Temperature 0.8 (sampled on the host from the logits row) and 0 (greedy: without a
# schema the argmax is taken on the device and only its id copied; with one, the masked
# row is read on the host).
for temperature in (0.8, 0.0):
    res = {}
    for r in range(runs):
        for n in (1, 32):
            for schema in (False, True):
                res.setdefault((n, schema), []).append(batch(n, schema, temperature))
    print(f"temperature {temperature}: decode tokens/s (median of {runs}; max_tokens {max_tokens}; "
          "tokens per batch in brackets)")
    for n in (1, 32):
        free = statistics.median(x[0] for x in res[(n, False)])
        con = statistics.median(x[0] for x in res[(n, True)])
        print(f"  N={n:2d}  no schema {free:8.1f} tok/s [{res[(n, False)][0][1]}]   "
              f"json_schema {con:8.1f} tok/s [{res[(n, True)][0][1]}]   ratio {con / free:.2f}", flush=True)
