"""The official `openai` Python client against the ingress over HTTPS.

Env: DAYSHIFT_BASE_URL (https://HOST:PORT/v1), DAYSHIFT_CA (PEM root to trust),
DAYSHIFT_KEY (API key), DAYSHIFT_HOST (test domain, resolved to 127.0.0.1 here).
"""
import os
import socket
import sys

import openai

host = os.environ["DAYSHIFT_HOST"]
_real = socket.getaddrinfo


def _resolve(name, *args, **kwargs):
    # The test domain lives on loopback only.
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

chat = client.chat.completions.create(
    model="tiny-chat",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
)
assert chat.choices[0].message.content == "Paris.", chat
assert chat.usage.prompt_tokens == 7, chat.usage
print("chat ok")

parts = []
usage = None
stream = client.chat.completions.create(
    model="tiny-chat",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
    if chunk.usage:
        usage = chunk.usage
assert "".join(parts) == "Paris.", parts
assert usage is not None and usage.completion_tokens == 2, usage
print("stream ok")

comp = client.completions.create(model="tiny-chat", prompt="The capital of France is")
assert comp.choices[0].text == " Paris", comp
print("completions ok")

emb = client.embeddings.create(model="tiny-embed", input=["a", "b"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) == 3, emb
assert abs(emb.data[0].embedding[0] - 0.25) < 1e-6
print("embeddings ok")

models = sorted(m.id for m in client.models.list())
assert models == ["tiny-chat", "tiny-embed"], models
print("models ok")

try:
    openai.OpenAI(
        base_url=os.environ["DAYSHIFT_BASE_URL"],
        api_key="dsk-wrong",
        http_client=openai.DefaultHttpxClient(verify=os.environ["DAYSHIFT_CA"]),
        max_retries=0,
    ).models.list()
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401
print("auth ok")
print("ALL OK")
