"""Drives a running dayshift-node with the official openai client (unchanged).

Usage: python3 openai_client.py BASE_URL   (e.g. http://127.0.0.1:PORT/v1)
Prints one line per check; exits non-zero on the first failure.
"""
import math
import sys

import openai
from openai import OpenAI

base = sys.argv[1]
c = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)

models = sorted(m.id for m in c.models.list())
assert models == ["minilm", "tiny"], models
print("models:", models)

r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello!"}],
                              max_tokens=12, temperature=0)
assert r.object == "chat.completion"
assert r.choices[0].message.role == "assistant"
assert r.choices[0].finish_reason in ("stop", "length")
assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 0
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
print("chat:", repr(r.choices[0].message.content), r.usage)

stream = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello!"}],
                                   max_tokens=12, temperature=0, stream=True,
                                   stream_options={"include_usage": True})
text, usage, finish, roles = "", None, None, []
for chunk in stream:
    assert chunk.object == "chat.completion.chunk"
    if chunk.usage is not None:
        usage = chunk.usage
        assert chunk.choices == []
        continue
    d = chunk.choices[0].delta
    if d.role:
        roles.append(d.role)
    text += d.content or ""
    if chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert roles == ["assistant"], roles
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
assert finish == r.choices[0].finish_reason
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
print("chat stream:", repr(text), usage)

cr = c.completions.create(model="tiny", prompt="The capital of France is", max_tokens=8, temperature=0)
assert cr.object == "text_completion" and cr.usage.completion_tokens >= 1
print("completion:", repr(cr.choices[0].text), cr.usage)
st = c.completions.create(model="tiny", prompt="The capital of France is", max_tokens=8, temperature=0,
                          stream=True, stream_options={"include_usage": True})
parts, usage = [], None
for chunk in st:
    if chunk.usage is not None:
        usage = chunk.usage
    for ch in chunk.choices:
        parts.append(ch.text)
assert "".join(parts) == cr.choices[0].text, (parts, cr.choices[0].text)
assert usage.completion_tokens == cr.usage.completion_tokens
print("completion stream:", repr("".join(parts)))

e = c.embeddings.create(model="minilm", input=["A man is playing a guitar.", "I love pizza"])
assert len(e.data) == 2 and len(e.data[0].embedding) == 384
n = math.sqrt(sum(x * x for x in e.data[0].embedding))
assert abs(n - 1) < 1e-3, n
ef = c.embeddings.create(model="minilm", input="I love pizza", encoding_format="float")
d = max(abs(a - b) for a, b in zip(ef.data[0].embedding, e.data[1].embedding))
assert d < 1e-4, d
assert e.usage.prompt_tokens > 0
print("embeddings: ok", e.usage)

try:
    c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("unknown model accepted")
except openai.NotFoundError as err:
    assert err.body["code"] == "model_not_found", err.body
    print("unknown model: 404", err.body["code"])
try:
    c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=17)
    raise SystemExit("n=17 accepted")
except openai.BadRequestError as err:
    assert err.body["param"] == "n", err.body
    print("n=17: 400")
print("ALL OK")
