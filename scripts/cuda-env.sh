#!/usr/bin/env bash
# CUDA 13.0 build environment for ScreenPilot on a machine without a GPU or a system CUDA.
#
#   . scripts/cuda-env.sh      # set up (if needed) and export the environment into this shell
#   scripts/cuda-env.sh        # only set up (idempotent); prints the exports
#
# Everything lives in the git-ignored folder .cuda/ at the repository root:
#   .cuda/toolkit-<ver>/nvidia/cu13/{bin,include,lib,nvvm}   nvcc + headers + libs from PyPI (cuda-toolkit)
#   .cuda/toolkit-<ver>/nvidia/cu13/lib/stubs/libcuda.so     link-time stub of the driver API (no PyPI wheel has one)
#   .cuda/toolkit-<ver>/nvidia/cu13/lib/lib*.so              unversioned symlinks the linker (-lcublas ...) needs
# CUDA 13.0 matches the GPU machine's driver (580 = CUDA 13.0); a newer nvcc may emit PTX it cannot load.
# The stub is for linking only: it is never put on LD_LIBRARY_PATH or in an rpath, so at run time the
# binary gets the real libcuda.so.1 of the GPU machine's driver.
#
# Overridable: CUDA_COMPUTE_CAP (default 90 = H100/H200), SP_CUDA_PYTHON (default python3).

_sp_cuda_version=13.0.2
_sp_cuda_extras="nvcc,cudart,cublas,curand,nvrtc,cccl,crt,nvvm"
_sp_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_sp_prefix="$_sp_repo/.cuda/toolkit-$_sp_cuda_version"

# Runs in a subshell so that `set -e` and friends never leak into a shell that sources this file.
_sp_cuda_setup() (
  set -euo pipefail
  repo=$1 prefix=$2 version=$3 extras=$4
  root="$prefix/nvidia/cu13"
  py=${SP_CUDA_PYTHON:-python3}

  # 1. Toolkit from PyPI, installed into a staging folder and moved into place only when complete.
  if [ ! -f "$prefix/.complete" ]; then
    mkdir -p "$repo/.cuda"
    staging="$prefix.staging"
    rm -rf "$staging" "$prefix"
    echo "cuda-env: installing cuda-toolkit[$extras]==$version from PyPI into ${prefix#"$repo"/}" >&2
    "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$staging" "cuda-toolkit[$extras]==$version" >&2
    [ -x "$staging/nvidia/cu13/bin/nvcc" ] || { echo "cuda-env: nvcc missing after install" >&2; exit 1; }
    "$py" -m pip list --disable-pip-version-check --path "$staging" --format freeze > "$staging/pip-freeze.txt" 2>/dev/null || true
    mv "$staging" "$prefix"
    touch "$prefix/.complete"
  fi
  [ -x "$root/bin/nvcc" ] || { echo "cuda-env: $root/bin/nvcc not found; remove $prefix and retry" >&2; exit 1; }

  # 2. Unversioned symlinks next to the versioned libraries (the wheels ship only lib*.so.<major>).
  for name in cudart cublas cublasLt curand nvrtc; do
    [ -e "$root/lib/lib$name.so" ] && continue
    # the shortest lib<name>.so.<N>* is the soname file (e.g. libcublas.so.13, libcurand.so.10)
    soname=$(cd "$root/lib" && ls -1 "lib$name.so."* 2>/dev/null | awk '{ print length, $0 }' | sort -n | head -1 | cut -d' ' -f2)
    [ -n "$soname" ] || { echo "cuda-env: $root/lib/lib$name.so.* not found" >&2; exit 1; }
    ln -sfn "$soname" "$root/lib/lib$name.so"
  done

  # 3. libcuda.so link stub: every cu* function cudarc's driver bindings declare, each returning
  #    CUDA_ERROR_UNKNOWN (999) should it ever be loaded by mistake. soname libcuda.so.1 so the binary
  #    records NEEDED libcuda.so.1 like one linked against NVIDIA's own stub.
  stub="$root/lib/stubs/libcuda.so"
  if [ ! -f "$stub" ]; then
    cudarc_ver=$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$repo/Cargo.lock")
    [ -n "$cudarc_ver" ] || { echo "cuda-env: cudarc not in Cargo.lock" >&2; exit 1; }
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    sys=$(ls -d "$cargo_home"/registry/src/*/"cudarc-$cudarc_ver"/src/driver/sys 2>/dev/null | head -1 || true)
    if [ -z "$sys" ]; then
      (cd "$repo" && cargo fetch --locked >&2)
      sys=$(ls -d "$cargo_home"/registry/src/*/"cudarc-$cudarc_ver"/src/driver/sys | head -1)
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    grep -ohE '\bfn cu[A-Za-z0-9_]+' "$sys"/*.rs | awk '{ print $2 }' | sort -u > "$tmp/symbols"
    [ -s "$tmp/symbols" ] || { echo "cuda-env: no cu* functions found in $sys" >&2; exit 1; }
    awk '{ printf "int %s(void) { return 999; }\n", $1 }' "$tmp/symbols" > "$tmp/libcuda_stub.c"
    mkdir -p "$root/lib/stubs"
    gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$tmp/libcuda.so" "$tmp/libcuda_stub.c"
    mv "$tmp/libcuda.so" "$stub"
    echo "cuda-env: wrote libcuda.so stub ($(wc -l < "$tmp/symbols") symbols from cudarc $cudarc_ver)" >&2
  fi
)

if _sp_cuda_setup "$_sp_repo" "$_sp_prefix" "$_sp_cuda_version" "$_sp_cuda_extras"; then
  export CUDA_ROOT="$_sp_prefix/nvidia/cu13"
  case ":$PATH:" in *":$CUDA_ROOT/bin:"*) ;; *) export PATH="$CUDA_ROOT/bin:$PATH" ;; esac
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "export CUDA_ROOT=$CUDA_ROOT"
    echo "export PATH=\$CUDA_ROOT/bin:\$PATH"
    echo "export CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
  fi
  unset _sp_cuda_version _sp_cuda_extras _sp_repo _sp_prefix
  unset -f _sp_cuda_setup
else
  echo "cuda-env: setup failed" >&2
  unset _sp_cuda_version _sp_cuda_extras _sp_repo _sp_prefix
  unset -f _sp_cuda_setup
  return 1 2>/dev/null || exit 1
fi
