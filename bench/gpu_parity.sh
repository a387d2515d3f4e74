#!/usr/bin/env bash
# The model's tests with the `cuda` feature on the GPU machine (built here by
# scripts/build-cuda-tests.sh, carried as target/carry/model-tests.tar.xz): each kernel op against
# candle's fallback on the GPU (ops::parity), a small random model end to end with kernels against
# candle's ops and CUDA graphs against eager launches (tests/cuda_parity.rs), and every CPU test.
# Usage: bench/gpu_parity.sh   (prints each binary's summary; exit 1 if any test failed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-bench/out}
mkdir -p "$OUTDIR"
[ -d target/carry/model-tests ] || tar -C target/carry -xJf target/carry/model-tests.tar.xz
built_at=$(cat target/carry/model-tests/BUILT_AT)
# The binaries read fixtures at the path they were built at: make it point here.
if [ "$built_at" != "$PWD" ] && [ ! -e "$built_at" ]; then
  mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"
fi
cp -n tests/fixtures/tokenizer/tokenizer.json tests/fixtures/tiny/ 2>/dev/null || true
status=0
for t in target/carry/model-tests/*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  # One test at a time: the GPU tests each load models, and their printed numbers stay readable.
  if ! (cd crates/model && "../../$t" --test-threads=1 --nocapture > "$OUTDIR/test_$name.txt" 2>&1); then status=1; fi
  echo "$name: $(grep -E '^test result' "$OUTDIR/test_$name.txt" | tail -n 1)"
done
grep -hE "cosine|FAILED|panicked" "$OUTDIR"/test_*.txt | head -n 60
exit $status
