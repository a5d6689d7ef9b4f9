#!/usr/bin/env bash
# Creates .venv in the checkout and installs everything MaskFormer needs, offline from PyPI only.
# Idempotent: a second run checks a stamp and returns in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MASK_FORMER_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.mask_former_setup_done"
SETUP_VERSION="4"   # bump when the install recipe below changes

fail() { echo "[setup] ERROR: $*" >&2; exit 1; }
step() { echo "[setup] $*"; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SETUP_VERSION" ]]; then
  exit 0
fi

command -v "$PY" >/dev/null || fail "$PY not found; install Python 3.10+ or set PYTHON=/path/to/python"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || fail "Python 3.10+ is required (found $("$PY" --version 2>&1))"

if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating virtual environment at $VENV"
  "$PY" -m venv "$VENV" || fail "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

step "installing torch 2.14.1 + torchvision 0.29.1 (a few minutes the first time)"
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" || fail "installing torch/torchvision failed"

if ! "$VPY" -m pip show -q detectron2 >/dev/null 2>&1; then
  step "installing detectron2 (PyPI sal-detectron2 0.7.2, repacked as a pure-Python wheel)"
  "${PIP[@]}" wheel || fail "installing wheel failed"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  "$VPY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.10 -d "$WORK/dl" "sal-detectron2==0.7.2" \
      || fail "downloading sal-detectron2==0.7.2 from PyPI failed"
  "$VPY" -m wheel unpack -d "$WORK/unpacked" "$WORK"/dl/sal_detectron2-*.whl >/dev/null \
      || fail "unpacking the detectron2 wheel failed"
  PKG_DIR="$(echo "$WORK"/unpacked/*)"
  rm -f "$PKG_DIR"/detectron2/_C*.so   # built for CPython 3.10; MaskFormer needs none of its ops
  # Rename the distribution to plain "detectron2" so that `install_requires=["detectron2"]` is met by
  # this build and by an upstream source install alike.
  mv "$PKG_DIR"/sal_detectron2-*.dist-info "$PKG_DIR/detectron2-0.7.2.dist-info"
  mv "$PKG_DIR" "$WORK/unpacked/detectron2-0.7.2"
  PKG_DIR="$WORK/unpacked/detectron2-0.7.2"
  # sal-detectron2 pins numpy<2 (upstream detectron2 does not): detectron2's own semantic label
  # reader fails on numpy 2, but MaskFormer reads label maps itself (mask_former/data/io.py).
  sed -i -e 's/^Name: .*/Name: detectron2/' -e 's/^Requires-Dist: numpy<2$/Requires-Dist: numpy/' \
      "$PKG_DIR/detectron2-0.7.2.dist-info/METADATA"
  sed -i -e 's/^Tag: .*/Tag: py3-none-any/' -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' \
      "$PKG_DIR/detectron2-0.7.2.dist-info/WHEEL"
  mkdir -p "$WORK/packed"
  "$VPY" -m wheel pack -d "$WORK/packed" "$PKG_DIR" >/dev/null || fail "repacking the detectron2 wheel failed"
  "${PIP[@]}" "$WORK"/packed/detectron2-*.whl fvcore iopath || fail "installing the repacked detectron2 failed"
fi

step "installing mask_former (editable, with the export extra) and test requirements"
# tensorboard: training writes its event files. transformers: the Hugging Face conversion tests
# build their checkpoints with it.
"${PIP[@]}" -e "$ROOT[export]" pytest hypothesis tensorboard transformers \
    || fail "pip install -e '.[export]' and the test requirements failed"

"$VPY" -c 'import torch, torchvision, detectron2, mask_former' || fail "import check failed"
echo "$SETUP_VERSION" > "$STAMP"
step "done: $VENV"
