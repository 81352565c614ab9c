"""Image embeddings from the detection tier's model on a Triton Inference Server.

Used instead of the local torch tower when ``TRITON_URL`` is configured. The URL picks the
protocol: ``grpc://host:8001`` for gRPC, ``http://host:8000`` (or ``https://``, or a bare
``host:port``) for HTTP. The model takes a batch of RGB images resized to the configured
size as uint8 (n, H, W, 3) and returns (n, d) embeddings; the client L2-normalises them.

Timeouts are explicit: `connect_timeout` bounds reaching the server (HTTP connect; the gRPC
readiness call's deadline), `read_timeout` bounds one inference call. Every failure is a
`TritonUnavailable` whose `permanent` says whether a retry can help: a refused connection, a
timeout or a 5xx/UNAVAILABLE is transient (retry later, with backoff); a missing model, a
rejected input or a wrong output shape is permanent (the configuration is wrong; retrying
the same request will fail the same way).

No Django here; tritonclient is imported when a client is made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

TRANSIENT_GRPC = {
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "INTERNAL",
    "UNKNOWN",
    "CANCELLED",
}


class TritonUnavailable(Exception):
    """The Triton path could not produce embeddings. `permanent`: retrying will not help."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent

    @property
    def retryable(self) -> bool:
        return not self.permanent


@dataclass(frozen=True)
class TritonConfig:
    url: str
    model_name: str = "image_embedder"
    model_version: str = ""  # "" = the server's default version
    input_name: str = "IMAGE"
    output_name: str = "EMBEDDING"
    image_size: int = 224
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    batch_size: int = 32

    @property
    def protocol(self) -> str:
        scheme = urlparse(self.url).scheme if "://" in self.url else ""
        return "grpc" if scheme == "grpc" else "http"

    @property
    def address(self) -> str:
        """host:port as tritonclient wants it (no scheme)."""
        return urlparse(self.url).netloc if "://" in self.url else self.url

    @property
    def ssl(self) -> bool:
        return self.url.startswith("https://")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TritonConfig | None:
        """From TRITON_URL (None when unset) and optional TRITON_MODEL, TRITON_MODEL_VERSION,
        TRITON_CONNECT_TIMEOUT, TRITON_READ_TIMEOUT."""
        env = os.environ if environ is None else environ
        url = env.get("TRITON_URL", "").strip()
        if not url:
            return None
        return cls(
            url=url,
            model_name=env.get("TRITON_MODEL", cls.model_name),
            model_version=env.get("TRITON_MODEL_VERSION", cls.model_version),
            connect_timeout=float(env.get("TRITON_CONNECT_TIMEOUT", cls.connect_timeout)),
            read_timeout=float(env.get("TRITON_READ_TIMEOUT", cls.read_timeout)),
        )


def _classify(exc: BaseException, what: str) -> TritonUnavailable:
    """Map tritonclient/transport errors to TritonUnavailable(permanent=...)."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, TritonUnavailable):
        return exc
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = exc.message() or str(exc)
        grpc_code = status.replace("StatusCode.", "")
        if grpc_code in TRANSIENT_GRPC:
            return TritonUnavailable(f"{what}: {grpc_code}: {message}", permanent=False)
        if status.isdigit() and "empty response" not in message.lower():
            code = int(status)
            return TritonUnavailable(
                f"{what}: HTTP {code}: {message}",
                permanent=400 <= code < 500 and code not in (408, 429),
            )
        lowered = message.lower()
        if "empty response" in lowered:  # the connection closed before an answer: transient
            return TritonUnavailable(f"{what}: {message}", permanent=False)
        if any(
            s in lowered
            for s in (
                "timed out",
                "timeout",
                "deadline",
                "connect",
                "unavailable",
                "refused",
                "reset",
            )
        ):
            return TritonUnavailable(f"{what}: {message}", permanent=False)
        return TritonUnavailable(
            f"{what}: {status or 'error'}: {message}", permanent=bool(grpc_code)
        )
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return TritonUnavailable(f"{what}: {type(exc).__name__}: {exc}", permanent=False)
    name = type(exc).__name__.lower()
    if "timeout" in name or "connection" in name:  # gevent / geventhttpclient socket errors
        return TritonUnavailable(f"{what}: {type(exc).__name__}: {exc}", permanent=False)
    return TritonUnavailable(f"{what}: unexpected {type(exc).__name__}: {exc}", permanent=False)


class TritonEmbedder:
    """Embeds PIL images through a Triton-served model; same output contract as
    `ImageModel.embed_images`: (n, d) float32, rows L2-normalised."""

    def __init__(self, config: TritonConfig):
        self.config = config
        if config.protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self._module = client_module
        try:
            if config.protocol == "grpc":
                self._client = client_module.InferenceServerClient(url=config.address)
            else:
                self._client = client_module.InferenceServerClient(
                    url=config.address,
                    connection_timeout=config.connect_timeout,
                    network_timeout=config.read_timeout,
                    ssl=config.ssl,
                )
        except Exception as exc:  # a malformed URL is a configuration error
            raise TritonUnavailable(
                f"cannot create a client for {config.url}: {exc}", permanent=True
            ) from exc
        self._metadata: dict[str, Any] | None = None

    @property
    def version(self) -> str:
        v = self.config.model_version or "default"
        return f"triton:{self.config.model_name}@{v}"

    @property
    def label(self) -> str:
        return f"Triton model {self.config.model_name} ({self.config.url})"

    def close(self) -> None:
        # Closing a dead connection must not mask the real error.
        with contextlib.suppress(Exception):
            self._client.close()

    def __enter__(self) -> TritonEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout_kwargs(self, seconds: float) -> dict[str, float]:
        return {"client_timeout": seconds} if self.config.protocol == "grpc" else {}

    def check_ready(self) -> dict[str, Any]:
        """Raise TritonUnavailable unless the model is loaded and ready; return its metadata."""
        cfg = self.config
        try:
            ready = self._client.is_model_ready(
                cfg.model_name, cfg.model_version, **self._timeout_kwargs(cfg.connect_timeout)
            )
        except Exception as exc:
            raise _classify(exc, f"Triton at {cfg.url} is not reachable") from exc
        if not ready:
            # Unknown to the server (a configuration error) or still loading (wait and retry).
            try:
                self._client.get_model_metadata(
                    cfg.model_name, cfg.model_version, **self._timeout_kwargs(cfg.connect_timeout)
                )
            except Exception as exc:
                error = _classify(exc, f"model {cfg.model_name!r} on {cfg.url}")
                if error.permanent:
                    raise TritonUnavailable(
                        f"model {cfg.model_name!r} is not served by {cfg.url}: {error}",
                        permanent=True,
                    ) from exc
            raise TritonUnavailable(
                f"model {cfg.model_name!r} is not ready on {cfg.url} (still loading?)",
                permanent=False,
            )
        if self._metadata is None:
            try:
                meta = self._client.get_model_metadata(
                    cfg.model_name, cfg.model_version, **self._timeout_kwargs(cfg.connect_timeout)
                )
            except Exception as exc:
                raise _classify(exc, f"model metadata from {cfg.url}") from exc
            if not isinstance(meta, dict):  # gRPC returns a protobuf message
                from google.protobuf.json_format import MessageToDict

                meta = MessageToDict(meta, preserving_proto_field_name=True)
            self._metadata = meta
        return self._metadata

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        size = self.config.image_size
        return np.stack(
            [
                np.asarray(
                    image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC),
                    dtype=np.uint8,
                )
                for image in images
            ]
        )

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        cfg = self.config
        m = self._module
        inputs = [m.InferInput(cfg.input_name, list(batch.shape), "UINT8")]
        inputs[0].set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.uint8))
        outputs = [m.InferRequestedOutput(cfg.output_name)]
        try:
            result = self._client.infer(
                cfg.model_name,
                inputs,
                model_version=cfg.model_version,
                outputs=outputs,
                **self._timeout_kwargs(cfg.read_timeout),
            )
        except Exception as exc:
            raise _classify(exc, f"inference on {cfg.url}") from exc
        out = result.as_numpy(cfg.output_name)
        if out is None or out.ndim != 2 or out.shape[0] != batch.shape[0]:
            shape = None if out is None else out.shape
            raise TritonUnavailable(
                f"model {cfg.model_name!r} returned {cfg.output_name} of shape {shape} "
                f"for {batch.shape[0]} images",
                permanent=True,
            )
        embeddings: np.ndarray = out.astype(np.float32)
        norms = np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        normalized: np.ndarray = embeddings / norms
        return normalized

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            raise ValueError("no images to embed")
        chunks = []
        images = list(images)
        for start in range(0, len(images), self.config.batch_size):
            chunks.append(
                self.embed_arrays(self.preprocess(images[start : start + self.config.batch_size]))
            )
        return np.concatenate(chunks)


def embedder_from_env(environ: Mapping[str, str] | None = None) -> TritonEmbedder | None:
    """A TritonEmbedder when TRITON_URL is set, else None (use the local model)."""
    config = TritonConfig.from_env(environ)
    return TritonEmbedder(config) if config else None
