#!/usr/bin/env bash
# The model crate's tests built with the `cuda` feature (release, into target/cuda next to the CUDA
# binary, so the dependencies are shared), packed for the GPU machine, which has no Rust:
#   scripts/build-cuda-tests.sh      -> target/carry/model-tests.tar.xz
# There: bench/gpu_parity.sh runs them (ops::parity, tests/cuda_parity.rs and every other model
# test). The test binaries find the fixtures through the repository path they were built at
# (CARGO_MANIFEST_DIR); bench/gpu_parity.sh links that path to the copy on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cuda-env.sh
. scripts/cuda-env.sh
out=target/carry/model-tests
rm -rf "$out" && mkdir -p "$out"
cargo test --release --locked --features cuda -p screenpilot-model --target-dir target/cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"], m["executable"])' \
  | while read -r name exe; do cp "$exe" "$out/$name"; done
strip "$out"/*   # symbols are most of their size; the carry to the GPU machine is capped at 64 MiB
echo "$PWD" > "$out/BUILT_AT"
tar -C target/carry -cf - model-tests | xz -T1 --lzma2=preset=6,dict=512MiB > target/carry/model-tests.tar.xz   # one dictionary over all: the binaries share most bytes
ls -la "$out" target/carry/model-tests.tar.xz
