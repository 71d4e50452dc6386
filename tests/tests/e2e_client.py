"""The user in the end-to-end test: the official `openai` client over HTTPS.

Env: DAYSHIFT_BASE_URL (https://HOST:PORT/v1), DAYSHIFT_CA (PEM root to trust, Pebble's),
DAYSHIFT_KEY (API key), DAYSHIFT_HOST (the certificate's name, resolved to 127.0.0.1),
DAYSHIFT_CHAT_MODEL, DAYSHIFT_EMBED_MODEL.
"""
import os
import socket

import openai

host = os.environ["DAYSHIFT_HOST"]
_real = socket.getaddrinfo


def _resolve(name, *args, **kwargs):
    if name == host:
        name = "127.0.0.1"
    return _real(name, *args, **kwargs)


socket.getaddrinfo = _resolve

client = openai.OpenAI(
    base_url=os.environ["DAYSHIFT_BASE_URL"],
    api_key=os.environ["DAYSHIFT_KEY"],
    http_client=openai.DefaultHttpxClient(verify=os.environ["DAYSHIFT_CA"]),
    max_retries=0,
)
chat_model = os.environ["DAYSHIFT_CHAT_MODEL"]
embed_model = os.environ["DAYSHIFT_EMBED_MODEL"]

parts, usage, chunks = [], None, 0
stream = client.chat.completions.create(
    model=chat_model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    stream=True,
    stream_options={"include_usage": True},
    max_tokens=16,
    temperature=0,
)
for chunk in stream:
    chunks += 1
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
    if chunk.usage:
        usage = chunk.usage
assert chunks >= 2, chunks
assert usage is not None and usage.completion_tokens > 0, usage
print(f"chat stream ok: {chunks} chunks, {usage.completion_tokens} tokens")

emb = client.embeddings.create(model=embed_model, input=["office hours", "GPU rental"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384, emb
print("embeddings ok")

models = [m.id for m in client.models.list().data]
assert chat_model in models and embed_model in models, models
print("models ok")
print("ALL OK")
