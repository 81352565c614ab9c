#!/usr/bin/env bash
# Create (idempotently) the virtual environment that runs the local Triton Inference Server:
# nvidia-pytriton 0.7.0 bundles tritonserver 2.51 and pins numpy<2, so it cannot share the
# portal's venv. Usage: scripts/triton/setup.sh [VENV_DIR]   (default: .venv-triton)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-triton}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.pytriton-0.7.0"

if [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import pytriton, numpy" 2>/dev/null; then
  exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade "pip<25"
"$VENV/bin/pip" install -q "nvidia-pytriton==0.7.0" "numpy<2"
"$VENV/bin/python" -c "import pytriton, numpy; print('pytriton venv ready:', numpy.__version__)"
touch "$STAMP"
