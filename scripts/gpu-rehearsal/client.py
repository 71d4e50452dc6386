#!/usr/bin/env python3
"""The official `openai` client against the ingress's HTTPS gateway, for the rehearsal:

  python3 client.py BASE_URL CA_PEM API_KEY ALONE_JSON

ALONE_JSON holds what the node alone answered (`chat`: greedy text, `embed`: vectors).
Prints one JSON line of results; exits 1 when the gateway's answers differ.
"""
import json
import math
import sys
import time

import openai

base, ca, key, alone_path = sys.argv[1:5]
alone = json.load(open(alone_path))
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120,
                       http_client=openai.DefaultHttpxClient(verify=ca))
PROMPT = [{"role": "user", "content": "t11 t12 t13 t14 t15 t16 t17 t18"}]
out = {"ok": True}

t = time.perf_counter()
r = client.chat.completions.create(model="chat", messages=PROMPT, max_tokens=32,
                                   temperature=0)
out["chat_secs"] = round(time.perf_counter() - t, 3)
out["chat_text"] = r.choices[0].message.content
out["chat_usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens]
out["chat_same_as_node_alone"] = out["chat_text"] == alone["chat"]

t = time.perf_counter()
parts, first = [], None
for ev in client.chat.completions.create(model="chat", messages=PROMPT, max_tokens=32,
                                         temperature=0, stream=True):
    if ev.choices and ev.choices[0].delta.content:
        first = first or time.perf_counter() - t
        parts.append(ev.choices[0].delta.content)
out["stream_chunks"] = len(parts)
out["stream_first_token_secs"] = round(first or -1, 3)
out["stream_same_as_node_alone"] = "".join(parts) == alone["chat"]

if "embed" in alone:
    texts = ["t100 t200 t300", "t7 t8 t9 t10 t11"]
    e = client.embeddings.create(model="embed", input=texts)
    vecs = [d.embedding for d in e.data]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b))
    out["embed_dims"] = len(vecs[0])
    out["embed_cos_vs_node_alone"] = [round(cos(a, b), 6) for a, b in zip(vecs, alone["embed"])]
    if "embed_reference" in alone:
        out["embed_cos_vs_transformers"] = [
            round(cos(a, b), 6) for a, b in zip(vecs, alone["embed_reference"])]
    out["embed_ok"] = all(c > 0.9999 for c in out["embed_cos_vs_node_alone"]) and all(
        c > 0.999 for c in out.get("embed_cos_vs_transformers", [1.0]))
    out["ok"] = out["ok"] and out["embed_ok"]

out["ok"] = out["ok"] and out["chat_same_as_node_alone"] and out["stream_same_as_node_alone"]
print(json.dumps(out))
sys.exit(0 if out["ok"] else 1)
