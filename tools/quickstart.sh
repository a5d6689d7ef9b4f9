#!/usr/bin/env bash
# Quick start: sets up .venv, then trains a small MaskFormer on the embedded synthetic shapes
# dataset (generated on first use, no download) on the CPU, evaluates it and saves
# output/quickstart/model_final.pth. Extra arguments are config overrides, e.g.
#   bash tools/quickstart.sh SOLVER.MAX_ITER 200
# A second run refuses to replace output/quickstart: pass --overwrite (or --resume).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" train_net.py --config-file configs/quickstart/maskformer_tiny_shapes.yaml "$@"
