"""The Triton path against a real Triton Inference Server (nvidia-pytriton, CPU).

The server runs from its own venv (.venv-triton; create it with scripts/triton/setup.sh) as
a subprocess on free loopback ports, serving scripts/triton/embedder_model.py.
"""

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detection.ml.triton_client import (
    TritonConfig,
    TritonEmbedder,
    TritonUnavailable,
    embedder_from_env,
)

ROOT = Path(__file__).resolve().parents[3]
TRITON_VENV = Path(os.environ.get("TRITON_VENV", ROOT / ".venv-triton"))
RUN = ROOT / "scripts" / "triton" / "run.sh"


def _load_reference_model():
    spec = importlib.util.spec_from_file_location(
        "embedder_model", ROOT / "scripts/triton/embedder_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory):
    if not (TRITON_VENV / "bin" / "python").exists():
        pytest.skip(f"the Triton server venv {TRITON_VENV} is missing: run scripts/triton/setup.sh")
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("triton") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(RUN),
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc),
                "--metrics-port",
                str(metrics),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TRITON_VENV": str(TRITON_VENV)},
        )
    try:
        deadline = time.monotonic() + 90
        ready_url = f"http://127.0.0.1:{http}/v2/models/image_embedder/ready"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Triton exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Triton was not ready in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"http": f"http://127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # tritonserver is its child, in the same new session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def photos():
    rng = np.random.default_rng(7)
    shapes = [(180, 260), (224, 224), (300, 200), (90, 120), (400, 400)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embeddings_come_from_the_served_model(triton_server, protocol):
    reference = _load_reference_model()
    images = photos()
    with TritonEmbedder(TritonConfig(url=triton_server[protocol], batch_size=2)) as embedder:
        meta = embedder.check_ready()
        assert meta["name"] == "image_embedder"
        vectors = embedder.embed_images(images)  # 5 images in 3 requests
        expected = reference.embed(embedder.preprocess(images))
        again = embedder.embed_images(images[:1])
    assert vectors.shape == (5, 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The model is a function of the picture: the same photo gives the same vector.
    assert float(vectors[0] @ vectors[1]) < 0.999
    np.testing.assert_allclose(again[0], vectors[0], atol=1e-6)
    assert embedder.version == "triton:image_embedder@default"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_model_the_server_does_not_have_is_a_permanent_error(triton_server, protocol):
    embedder = TritonEmbedder(TritonConfig(url=triton_server[protocol], model_name="no_such_model"))
    with pytest.raises(TritonUnavailable) as info:
        embedder.check_ready()
    assert info.value.permanent
    assert "no_such_model" in str(info.value)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_input_the_model_rejects_is_a_permanent_error(triton_server, protocol):
    embedder = TritonEmbedder(TritonConfig(url=triton_server[protocol], image_size=100))
    with pytest.raises(TritonUnavailable) as info:
        embedder.embed_images(photos()[:1])
    assert info.value.permanent
    assert "shape" in str(info.value)


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_server_that_is_down_fails_fast_and_can_be_retried(scheme):
    url = f"{scheme}://127.0.0.1:{free_port()}"  # nothing listens there
    embedder = TritonEmbedder(TritonConfig(url=url, connect_timeout=1.0, read_timeout=2.0))
    started = time.monotonic()
    with pytest.raises(TritonUnavailable) as info:
        embedder.check_ready()
    assert time.monotonic() - started < 1.5
    assert not info.value.permanent
    assert info.value.retryable
    assert url in str(info.value)
    with pytest.raises(TritonUnavailable) as info:
        embedder.embed_images(photos()[:1])
    assert not info.value.permanent


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_server_that_never_answers_hits_the_timeout(scheme):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(listener.accept()[0])  # hold the connection, say nothing
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}"
        embedder = TritonEmbedder(TritonConfig(url=url, connect_timeout=0.5, read_timeout=1.0))
        started = time.monotonic()
        with pytest.raises(TritonUnavailable) as info:
            embedder.embed_images(photos()[:1])
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 3.0
        assert not info.value.permanent
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_configuration_comes_from_the_environment():
    assert embedder_from_env({}) is None
    cfg = TritonConfig.from_env(
        {"TRITON_URL": "grpc://triton.internal:8001", "TRITON_READ_TIMEOUT": "3.5"}
    )
    assert (cfg.protocol, cfg.address, cfg.read_timeout) == ("grpc", "triton.internal:8001", 3.5)
    cfg = TritonConfig.from_env(
        {"TRITON_URL": "https://triton.internal", "TRITON_MODEL": "clip_visual"}
    )
    assert (cfg.protocol, cfg.address, cfg.ssl, cfg.model_name) == (
        "http",
        "triton.internal",
        True,
        "clip_visual",
    )
    assert TritonConfig(url="127.0.0.1:8000").protocol == "http"
