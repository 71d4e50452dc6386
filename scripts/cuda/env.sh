#!/usr/bin/env bash
# Source this file: it installs (once) a CUDA 13.0 compiler from PyPI wheels into
# $DAYSHIFT_CUDA (default ~/.cache/dayshift-cuda-13.0) and exports what a CUDA build of
# candle needs. No GPU, driver or CUDA toolkit is needed on the build machine.
#   . scripts/cuda/env.sh
# Why 13.0: PTX written by a newer nvcc cannot be loaded by an older driver, and driver
# 580 (CUDA 13.0) is the oldest that loads PTX from nvcc 13.0.
# CUDA_COMPUTE_CAP=80: candle's kernels become compute_80 PTX, which the driver JIT-compiles
# for sm_80 (A100), sm_86/sm_89 (A10, L4, L40S) and sm_90 (H100, H200) alike.
tk=${DAYSHIFT_CUDA:-$HOME/.cache/dayshift-cuda-13.0}
if [ ! -x "$tk/nvidia/cu13/bin/nvcc" ]; then
  whl=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$whl" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 || return 1
  mkdir -p "$tk"
  for w in "$whl"/*.whl; do unzip -qo "$w" -d "$tk"; done
  chmod +x "$tk"/nvidia/cu13/bin/* "$tk"/nvidia/cu13/nvvm/bin/* 2>/dev/null
  rm -rf "$whl"
fi
export PATH="$tk/nvidia/cu13/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
export DAYSHIFT_CUDA_TK="$tk"
