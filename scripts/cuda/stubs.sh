#!/usr/bin/env bash
# Link-time stand-ins for the CUDA libraries that candle links dynamically (the build
# machine has no GPU driver and no cuBLAS). Each stub carries the real library's soname, so
# the binary loads the real libraries on the GPU server. Nothing of a stub is shipped.
# Usage: scripts/cuda/stubs.sh TARGET_PROFILE_DIR OUT_DIR   (after sourcing env.sh)
set -euo pipefail
target=${1:?e.g. target-cuda/release}
out=${2:?output dir}
tk=${DAYSHIFT_CUDA_TK:?source scripts/cuda/env.sh first}
mkdir -p "$out"
syms=$(for f in "$target"/deps/*.rlib "$target"/build/*/out/*.a; do
  nm -u --format=just-symbols "$f" 2>/dev/null || true; done | sort -u)
stub() { # file soname symbol-regex
  echo "$syms" | grep -E "$3" | sed 's/.*/void &(void){}/' >"$out/$1.c" || true
  gcc -shared -fPIC -o "$out/$1.so" -Wl,-soname,"$2" "$out/$1.c"
}
stub libcuda libcuda.so.1 '^cu[A-Z]'
stub libnvrtc libnvrtc.so.13 '^nvrtc'
stub libcurand libcurand.so.10 '^curand'
stub libcublasLt libcublasLt.so.13 '^cublasLt'
stub libcublas libcublas.so.13 '^cublas([^L]|$)'
ln -sf "$tk/nvidia/cu13/lib/libcudart.so.13" "$out/libcudart.so"   # the real one, for linking
