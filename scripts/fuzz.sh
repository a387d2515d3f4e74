#!/usr/bin/env bash
# Fuzz smoke check (CI): builds every cargo-fuzz target of fuzz/ and runs each for SECONDS
# (default 30) from its committed corpus, fuzz/corpus/<target> (read only: new inputs go to a
# temporary folder). Exits non-zero if any target crashes, panics, runs an input for more than
# 1 s or allocates more than 2 GB; the input is then in fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]. See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true
CARGO_FUZZ_VERSION=0.13.2
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -C passes=sancov...) to rustc.
export RUSTC_BOOTSTRAP=1
# See docs/FUZZING.md ("Build") for why these flags.
BUILD_FLAGS=(-O -a --sanitizer address)
LIBFUZZER_FLAGS=(-timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1)

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
if [ ! -f tests/fixtures/tiny/tokenizer.json ] && [ ! -f tests/fixtures/tokenizer/tokenizer.json ]; then
  echo "fuzz: no tokenizer.json under tests/fixtures (chat_template needs it): run scripts/setup.sh" >&2
  exit 1
fi

cd fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
start=$(date +%s)
cargo fuzz build "${BUILD_FLAGS[@]}"
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - start )) s"

work=$(mktemp -d)
trap 'rm -rf "$work" /dev/shm/screenpilot-fuzz-safetensors-* 2>/dev/null || true' EXIT
failed=()
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${secs} s"
  mkdir -p "$work/$t" "artifacts/$t" "corpus/$t"
  dict=()
  [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
  log="$work/$t.log"
  if cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$work/$t" "corpus/$t" -- \
      "${LIBFUZZER_FLAGS[@]}" "${dict[@]}" -max_total_time="$secs" >"$log" 2>&1; then
    tail -n 14 "$log"
    echo "fuzz: $t ok"
  else
    tail -n 100 "$log"
    echo "fuzz: $t FAILED"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
       "RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_FLAGS[*]} <target> <input> in fuzz/)" >&2
  exit 1
fi
echo "fuzz: ok (${#targets[@]} targets, ${secs} s each)"
