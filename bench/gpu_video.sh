#!/usr/bin/env bash
# The rewind workload on the GPU machine, ours and transformers in one command on the same GPU:
# a 30-second rewind of a 1920x1080 screen at 2 frames a second (60 frames, every one different)
# sent as a video with a short question, time to first token cold (caches empty) and for a
# second question about the same clip. 2B shape, random weights, bf16. Needs the CUDA binary
# (scripts/build-cuda.sh) and the tokenizer (scripts/setup.sh).
# Usage: bench/gpu_video.sh [seconds] [WxH]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/cuda/release/screenpilot}
OUTDIR=${OUT:-bench/out}
SECS=${1:-30}
SCREEN=${2:-1920x1080}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
export PYTHONUNBUFFERED=1
"$BIN" bench --shape 2b --device cuda --dtype bf16 --rewind "$SECS" --rewind-fps 2 --screen "$SCREEN" \
  --text-tokens 32 --new-tokens 32 --followup-tokens 30 --reps 3 --json-out "$OUTDIR/ours_video.json"
python3 bench/hf_video.py --shape 2b --seconds "$SECS" --fps 2 --screen "$SCREEN" --text-tokens 32 --reps 3 \
  --out "$OUTDIR/hf_video.json" > /dev/null
python3 - "$OUTDIR/ours_video.json" "$OUTDIR/hf_video.json" <<'PY'
import json, sys
o, h = (json.load(open(p)) for p in sys.argv[1:3])
r = h["rewind"]
print(f"\nrewind {r['seconds']}s of {r['screen'][0]}x{r['screen'][1]} at {r['fps']} fps on {h['device']}: "
      f"ours {o['visual_tokens']} visual tokens / {o['prompt_tokens']} prompt tokens, "
      f"transformers {h['visual_tokens']} / {h['prompt_tokens']}")
print(f"{'metric':<24}{'ours':>12}{'transformers':>14}{'speed-up':>10}")
for k in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "followup_ttft_ms"]:
    a = o.get(k, {}).get("median"); b = h.get(k, {}).get("median")
    if a is None or b is None: continue
    print(f"{k:<24}{a:>12.2f}{b:>14.2f}{b / a:>9.2f}x")
print(f"{'peak_tensor_mem_gib':<24}{o.get('peak_tensor_mem_gib') or 0:>12.2f}{h['peak_gpu_mem_gib']:>14.2f}")
PY
