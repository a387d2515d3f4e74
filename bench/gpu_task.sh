#!/usr/bin/env bash
# The cost of each step of a GUI task on the GPU machine: our engine (screenpilot bench-task:
# vision and prefix caches, step k encodes only its new screenshot) against transformers re-running
# the whole conversation every step (bench/hf_task_steps.py), same shape, screenshots and prompt
# sizes, same GPU, same call. Needs the CUDA binary (scripts/build-cuda.sh) and the tokenizer.
# Usage: bench/gpu_task.sh [shape] [steps] [WxH]   (default 2b 6 1920x1080)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/cuda/release/screenpilot}
OUTDIR=${OUT:-bench/out}
shape=${1:-2b}; steps=${2:-6}; screen=${3:-1920x1080}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
"$BIN" bench-task --shape "$shape" --device cuda --dtype bf16 --steps "$steps" --screen "$screen" \
  --answer-tokens 32 --reps 3 --json-out "$OUTDIR/ours_task_$shape.json"
first=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['steps'][0]['prompt_tokens'])" "$OUTDIR/ours_task_$shape.json")
python3 bench/hf_task_steps.py --shape "$shape" --steps "$steps" --screen "$screen" --answer-tokens 32 --reps 3 \
  --match-prompt "$first" --out "$OUTDIR/hf_task_$shape.json" > /dev/null
python3 - "$OUTDIR/ours_task_$shape.json" "$OUTDIR/hf_task_$shape.json" <<'PY'
import json, sys
o, h = (json.load(open(p)) for p in sys.argv[1:3])
print(f"\nGUI task steps, {o['model']} vs {h['model']} on {h['device']}, {o['screen'][0]}x{o['screen'][1]} screenshots, "
      f"{o['answer_tokens']}-token answers, medians of {o['reps']}")
print(f"{'step':<5}{'prompt ours/hf':>16}{'prefilled':>10}{'ours preproc':>13}{'ours vision':>12}{'ours prefill':>13}"
      f"{'ours TTFT':>10}{'hf TTFT':>10}{'speed-up':>9}")
for so, sh in zip(o["steps"], h["steps"]):
    m = lambda d, k: d[k]["median"]
    print(f"{so['step']:<5}{so['prompt_tokens']:>8}/{sh['prompt_tokens']:<7}{so['prefill_tokens']:>10}"
          f"{m(so,'preprocess_ms'):>13.2f}{m(so,'vision_ms'):>12.2f}{m(so,'prefill_ms'):>13.2f}"
          f"{m(so,'ttft_ms'):>10.2f}{m(sh,'ttft_ms'):>10.2f}{m(sh,'ttft_ms')/m(so,'ttft_ms'):>8.1f}x")
PY
