#!/usr/bin/env bash
# Release build of the `screenpilot` binary with CUDA (candle `cuda` feature), for the GPU machine
# (H100, driver 580 = CUDA 13.0, glibc 2.39). Works without a GPU: scripts/cuda-env.sh provides nvcc and
# the CUDA libraries from PyPI and a libcuda.so link stub, all under .cuda/.
# Builds into target/cuda so the CPU builds in target/ are not invalidated.
#
#   scripts/build-cuda.sh [extra cargo args]
#
# Then copy target/cuda/release/screenpilot to the GPU machine; it needs there libcuda.so.1 (driver),
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libcudart.so.13, libnvrtc.so.13 (CUDA 13 runtime
# libraries, found by ldconfig or LD_LIBRARY_PATH) plus whatever else the report below lists.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/cuda-env.sh
. scripts/cuda-env.sh

MAX_GLIBC=2.39
target_dir=target/cuda
bin="$target_dir/release/screenpilot"

echo "build-cuda: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_ROOT=$CUDA_ROOT, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
start=$(date +%s)
cargo build --release --locked --no-default-features --features cuda -p screenpilot-cli --target-dir "$target_dir" "$@"
elapsed=$(( $(date +%s) - start ))

[ -f "$bin" ] || { echo "build-cuda: $bin not produced" >&2; exit 1; }
echo
echo "== binary:  $(realpath "$bin")"
echo "== size:    $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1)); build took ${elapsed}s"
echo "== stripped: $(file -b "$bin" | grep -o 'not stripped\|stripped' || echo '?')"

echo "== NEEDED (readelf -d):"
mapfile -t needed < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for lib in "${needed[@]}"; do
  case "$lib" in
    libcuda.so.*)                                   kind="NVIDIA driver" ;;
    libcudart.so.*|libcublas*.so.*|libcurand.so.*|libnvrtc.so.*) kind="CUDA 13 runtime library" ;;
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) kind="system (glibc / gcc)" ;;
    *)                                               kind="OTHER: must be installed on the GPU machine" ;;
  esac
  printf '   %-28s %s\n' "$lib" "$kind"
done
echo "== RPATH/RUNPATH: $(readelf -d "$bin" | grep -E 'RPATH|RUNPATH' || echo none)"

echo "== ldd (on this build machine; the CUDA libs resolve to .cuda/ here only through LD_LIBRARY_PATH):"
LD_LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs" ldd "$bin" | sed 's/^/  /'

syms=$(objdump -T "$bin")
max_glibc=$(grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' <<<"$syms" | sed 's/GLIBC_//' | sort -uV | tail -1)
max_glibcxx=$(grep -oE 'GLIBCXX_[0-9]+(\.[0-9]+)+' <<<"$syms" | sed 's/GLIBCXX_//' | sort -uV | tail -1 || true)
max_cxxabi=$(grep -oE 'CXXABI_[0-9]+(\.[0-9]+)+' <<<"$syms" | sed 's/CXXABI_//' | sort -uV | tail -1 || true)
echo "== max GLIBC symbol version: GLIBC_$max_glibc (limit $MAX_GLIBC)"
[ -n "$max_glibcxx" ] && echo "== max GLIBCXX / CXXABI:     GLIBCXX_$max_glibcxx / CXXABI_${max_cxxabi:-none}"
if [ "$(printf '%s\n%s\n' "$max_glibc" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
  echo "build-cuda: binary needs GLIBC_$max_glibc > $MAX_GLIBC of the GPU machine" >&2
  exit 1
fi
echo "build-cuda: ok"
