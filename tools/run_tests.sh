#!/usr/bin/env bash
# Sets up .venv (tools/setup_env.sh; fast when already done) and runs the CPU test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k parity`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest tests -q --durations=10 "$@"
