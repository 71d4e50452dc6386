#!/usr/bin/env bash
# Builds the CUDA dayshift-node on a machine without a GPU or CUDA toolkit:
#   scripts/build-cuda-node.sh [OUT_FILE]      (default: target-cuda/dayshift-node-cuda)
# It installs nvcc 13.0 from PyPI wheels once (scripts/cuda/env.sh), builds
# `dayshift-node --features cuda` in release into its own target dir (CARGO_TARGET_DIR,
# default target-cuda, so CPU builds in target/ are untouched), links against stubs of
# the CUDA libraries (scripts/cuda/stubs.sh; the real ones are loaded on the GPU server),
# strips the binary and writes OUT_FILE and OUT_FILE.sha256.
# The first build compiles candle's kernels with nvcc: 10+ minutes on 2 cores. Keep the
# target dir between builds.
# Needs on the GPU server: NVIDIA driver >= 580 (CUDA 13.0), libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10 and libcudart.so.13 (CUDA 13 runtime libraries,
# e.g. the cuda-libraries-13-0 package or the nvidia-cublas / nvidia-curand /
# nvidia-cuda-runtime wheels) on the loader path.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
. scripts/cuda/env.sh || { echo "build-cuda-node: could not install nvcc 13.0 from PyPI" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
out=${1:-$CARGO_TARGET_DIR/dayshift-node-cuda}
stubs="$CARGO_TARGET_DIR/cuda-stubs"
args=(build --locked --release -p dayshift-node --features cuda)
start=$(date +%s)
build() {
  if [ -d "$stubs" ]; then LIBRARY_PATH="$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}" cargo "${args[@]}"
  else cargo "${args[@]}"; fi
}
if ! build; then
  # The first link fails for want of the CUDA libraries: make stubs from what was built, link again.
  echo "build-cuda-node: making link-time stubs of the CUDA libraries in $stubs" >&2
  bash scripts/cuda/stubs.sh "$CARGO_TARGET_DIR/release" "$stubs" || exit 1
  build || exit 1
fi
mkdir -p "$(dirname "$out")"
strip -o "$out" "$CARGO_TARGET_DIR/release/dayshift-node" || exit 1
(cd "$(dirname "$out")" && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
echo "build-cuda-node: $out"
echo "  size   $(stat -c %s "$out") bytes ($(du -h "$out" | cut -f1)); zstd -19: $(zstd -19 -c -q "$out" | wc -c) bytes"
echo "  sha256 $(cut -d' ' -f1 "$out.sha256")"
echo "  built in $(( $(date +%s) - start )) s (compute cap $CUDA_COMPUTE_CAP, nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
echo "  needs  $(readelf -d "$out" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
