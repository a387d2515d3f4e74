#!/usr/bin/env bash
# Fault test on the GPU machine (issue 17: "GPU OOM on a huge request"): `screenpilot serve` on a
# random 2B model in bf16; another process then takes nearly all of the GPU's free memory, and a
# request with a large screenshot arrives. It must be refused with a clear JSON error (not a crash,
# not a hang), and once the memory is back the same server must answer the same request and a small
# one. Needs the CUDA binary (scripts/build-cuda.sh). Usage: bench/gpu_oom.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/cuda/release/screenpilot}
model=${MODEL:-/tmp/qwen3vl-2b-oom}   # made here unless it exists (e.g. by tools/compare_with_hf.py)
port=8111
[ -f "$model/config.json" ] || python3 - "$model" <<'PY'
import sys
sys.path.insert(0, "tools")
from compare_with_hf import make_random
make_random("2b", sys.argv[1], "tests/fixtures/tokenizer/tokenizer.json", "cuda")
PY
"$BIN" serve --model "$model" --device cuda --dtype bf16 --port "$port" > /tmp/oom-serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python3 -c "
import time, urllib.request
for _ in range(240):
    try: urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2); break
    except Exception: time.sleep(0.5)
"
python3 - "$port" <<'PY'
import base64, io, json, sys, time, urllib.request
import numpy as np, torch
from PIL import Image
port = int(sys.argv[1])

def png(side, salt):
    y, x = np.mgrid[0:side, 0:side].astype(np.uint32)
    img = np.stack([(x * 7 + y + salt) % 256, (y * 3) % 256, ((x ^ y) * 5) % 256], -1).astype(np.uint8)
    buf = io.BytesIO(); Image.fromarray(img).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

def ask(side, salt):
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png(side, salt)}},
                                                      {"type": "text", "text": "What is on this screen?"}]}],
            "max_tokens": 8}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t = time.time()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())["choices"][0]["finish_reason"], time.time() - t
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]["message"][:300], time.time() - t

free, total = torch.cuda.mem_get_info()
hog = []
while True:  # take all but ~1.5 GiB of what is free, in 256 MiB blocks
    free, _ = torch.cuda.mem_get_info()
    if free < (1536 << 20): break
    hog.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
print(f"held by another process: {len(hog) * 256} MiB; free now {torch.cuda.mem_get_info()[0] >> 20} MiB")
big = 3584
print("big request while memory is short:", ask(big, 1))
print("small request while memory is short:", ask(448, 2))
del hog; torch.cuda.empty_cache()
print("big request after the memory is back:", ask(big, 3))
print("small request after:", ask(448, 4))
PY
echo "server still running: $(kill -0 $server 2>/dev/null && echo yes || echo no)"
tail -5 /tmp/oom-serve.log
