#!/usr/bin/env bash
# One command for the GPU machine: full-size exactness against transformers (2B shape, random
# weights, bf16), then the speed workload in our binary and in transformers, side by side on the
# same GPU, with the ratios. Needs the CUDA binary (scripts/build-cuda.sh) and the tokenizer
# (scripts/setup.sh). Usage: bench/gpu.sh [--no-exact] [--static] [shape ...]   (default shape 2b)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/cuda/release/screenpilot}
OUTDIR=${OUT:-bench/out}
mkdir -p "$OUTDIR"
exact=1; static=""; shapes=()
for a in "$@"; do
  case "$a" in
    --no-exact) exact=0 ;;
    --static) static="--static" ;;
    *) shapes+=("$a") ;;
  esac
done
[ ${#shapes[@]} -eq 0 ] && shapes=(2b)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
export PYTHONUNBUFFERED=1

if [ "$exact" = 1 ]; then
  model=/tmp/qwen3vl-2b-random
  rm -rf "$model"
  python3 tools/compare_with_hf.py --make-random 2b --model "$model" --tokenizer tests/fixtures/tokenizer/tokenizer.json \
    --binary "$BIN" --device cuda --dtype bf16 --image-size 1024 --new-tokens 32 \
    --out "$OUTDIR/exact_2b.json" | grep -v '^  [0-9]' || echo "exactness check FAILED (see $OUTDIR/exact_2b.json)"
  rm -rf "$model"
fi

for s in "${shapes[@]}"; do
  "$BIN" bench --shape "$s" --device cuda --dtype bf16 --reps 5 --json-out "$OUTDIR/ours_$s.json" \
    || { echo "our bench FAILED for $s"; continue; }
  python3 bench/hf_reference.py --shape "$s" --reps 5 $static --out "$OUTDIR/hf_$s.json" > /dev/null \
    || { echo "transformers bench FAILED for $s"; continue; }
  python3 - "$OUTDIR/ours_$s.json" "$OUTDIR/hf_$s.json" <<'PY'
import json, sys
o, h = (json.load(open(p)) for p in sys.argv[1:3])
print(f"\n{o['model']} vs {h['model']} on {h['device']} ({h['params']/1e9:.2f} B params, {h['prompt_tokens']} prompt tokens)")
print(f"{'metric':<24}{'ours':>12}{'transformers':>14}{'speed-up':>10}")
for k, higher in [("vision_ms", 0), ("prefill_ms", 0), ("ttft_ms", 0), ("decode_tokens_per_s", 1),
                  ("followup_ttft_ms", 0), ("decode_static_tokens_per_s", 1)]:
    a = o.get(k, {}).get("median"); b = h.get(k, {}).get("median")
    if k == "decode_static_tokens_per_s": a = o["decode_tokens_per_s"]["median"]
    if a is None or b is None: continue
    r = a / b if higher else b / a
    print(f"{k:<24}{a:>12.2f}{b:>14.2f}{r:>9.2f}x")
# transformers' number is torch.cuda.max_memory_allocated (tensors); ours the same kind of
# high-water mark (allocator pool + CUDA graphs), and device-wide (context, cuBLAS, pool slack).
print(f"{'peak_tensor_mem_gib':<24}{o.get('peak_tensor_mem_gib') or 0:>12.2f}{h['peak_gpu_mem_gib']:>14.2f}")
print(f"{'peak_gpu_mem_gib device':<24}{o['peak_gpu_mem_gib'] or 0:>12.2f}{'-':>14}")
PY
done
