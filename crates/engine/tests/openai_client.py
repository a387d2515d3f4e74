"""Talks to a running ScreenPilot server with the official `openai` client.

Usage: python openai_client.py BASE_URL API_KEY IMAGE_PNG
Exits non-zero (with a message) on the first check that fails; prints a JSON summary.
"""
import base64
import json
import sys

import openai

base_url, api_key, image_path = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

models = [m.id for m in client.models.list().data]
assert models == ["qwen3-vl"], models

png = base64.b64encode(open(image_path, "rb").read()).decode()
question = {"type": "text", "text": "What is on screen?"}


def messages(url):
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, question]},
    ]


plain = client.chat.completions.create(
    model="qwen3-vl", messages=messages(f"data:image/png;base64,{png}"), max_tokens=8, temperature=0, seed=1
)
text = plain.choices[0].message.content
assert plain.choices[0].finish_reason in ("stop", "length"), plain.choices[0].finish_reason
assert plain.usage.completion_tokens >= 1 and plain.usage.prompt_tokens > 12, plain.usage

# The same question streamed, with the image given as a local file: same answer.
chunks = list(
    client.chat.completions.create(
        model="qwen3-vl",
        messages=messages("file://" + image_path),
        max_tokens=8,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
)
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == text, (streamed, text)
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finishes == [plain.choices[0].finish_reason], finishes

# A stop string cuts the answer before it.
stopped = None
if len(text) >= 4:
    stop = text[2:4]
    r = client.chat.completions.create(
        model="qwen3-vl", messages=messages(f"data:image/png;base64,{png}"), max_tokens=8, temperature=0, stop=[stop]
    )
    stopped = r.choices[0].message.content
    assert stopped == text[: text.find(stop)], (stopped, text, stop)

# Errors surface as the client's typed exceptions.
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass
try:
    client.chat.completions.create(
        model="qwen3-vl",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
    )
    raise AssertionError("a broken image was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400

print(json.dumps({"text": text, "streamed": streamed, "stopped": stopped, "chunks": len(chunks)}))
