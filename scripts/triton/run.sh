#!/usr/bin/env bash
# Run serve_embedder.py in the pytriton venv with the library path Triton's Python backend
# needs (the venv's own Python's lib directory). Arguments go to serve_embedder.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
LIBDIR="$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")"
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$VENV/bin/python" "$ROOT/scripts/triton/serve_embedder.py" "$@"
