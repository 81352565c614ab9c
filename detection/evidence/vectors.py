"""What the enrichment steps compute with: the image model (loaded once per worker process), a
listing's stored images, and the vectors of the neighbour space (image embeddings, locally or from
Triton, joined with the listing text's). Heavy code lives in `detection.ml`, imported inside
functions, so the web process never loads torch."""

import io
import os
import threading
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from detection.models import DetectionEvent, ImageEmbedding, ListingImage


class StepUnavailable(Exception):
    """A component the step needs is not configured: the page says so, a retry cannot help."""


class StepTransient(Exception):
    """A failure a retry can fix (a remote server down, a lock); the task retries, bounded."""


# --- the image model, loaded once per worker process ---------------------------------------

_lock = threading.Lock()
_model_cache: dict[str, object] = {}


def image_model():
    path = settings.DETECTION_MODEL_CONFIG
    if not path or not os.path.exists(path):
        raise StepUnavailable(f"image model not configured (no model config at {path})")
    key = f"{path}:{os.path.getmtime(path)}"
    with _lock:
        model = _model_cache.get(key)
        if model is None:
            from detection.ml.models import load_model

            _model_cache.clear()
            model = _model_cache[key] = load_model(path)
    return model


def model_description() -> dict:
    """Which weights are loaded, for pages and the API (reads the config file; no torch)."""
    import json

    path = settings.DETECTION_MODEL_CONFIG
    if not path or not os.path.exists(path):
        return {"configured": False, "label": "image model not configured", "path": path}
    try:
        data = json.loads(open(path).read())  # noqa: SIM115
    except (OSError, ValueError) as exc:
        return {"configured": False, "label": f"model config unreadable: {exc}", "path": path}
    return {
        "configured": True,
        "label": data.get("label", ""),
        "architecture": data.get("architecture"),
        "version": data.get("version"),
        "path": path,
    }


# --- images ------------------------------------------------------------------------------


def stored_images(event: DetectionEvent) -> list[ListingImage]:
    from detection.intake.fetch import FetchError, images_fetch_pending

    try:
        images_fetch_pending(listing_id=event.listing_id)
    except FetchError as exc:  # only transient ones reach here; permanent ones mark the image
        raise StepTransient(f"image fetch: {exc}") from exc
    return list(
        ListingImage.objects.filter(
            listing_id=event.listing_id, state=ListingImage.State.STORED
        ).order_by("position")
    )


def pil_image(image: ListingImage):
    from PIL import Image

    with image.content.open("rb") as handle:
        data = handle.read()
    pil = Image.open(io.BytesIO(data))
    pil.load()
    return pil.convert("RGB"), data


# --- embeddings (local model or Triton) ----------------------------------------------------


@dataclass
class Embedder:
    version: str
    source: str

    def embed(self, pils) -> np.ndarray:
        raise NotImplementedError


class LocalEmbedder(Embedder):
    def __init__(self):
        self.model = image_model()
        super().__init__(version=self.model.version, source="local")

    def embed(self, pils) -> np.ndarray:
        return self.model.embed_images(pils)


class TritonEmbedder(Embedder):
    """Embeddings from the detection tier's model on a Triton Inference Server."""

    def __init__(self, url: str):
        from detection.ml import triton_client

        timeout = settings.TRITON_TIMEOUT_SECONDS
        config = triton_client.TritonConfig(
            url=url,
            model_name=settings.TRITON_MODEL,
            connect_timeout=min(timeout, 2.0),
            read_timeout=timeout,
        )
        try:
            self.client = triton_client.TritonEmbedder(config)
            self.client.check_ready()
        except triton_client.TritonUnavailable as exc:
            raise (StepUnavailable if exc.permanent else StepTransient)(f"Triton: {exc}") from exc
        super().__init__(version=self.client.version, source="triton")

    def embed(self, pils) -> np.ndarray:
        from detection.ml import triton_client

        try:
            return self.client.embed_images(pils)
        except triton_client.TritonUnavailable as exc:
            raise (StepUnavailable if exc.permanent else StepTransient)(f"Triton: {exc}") from exc


def embedder() -> Embedder:
    if settings.TRITON_URL:
        return TritonEmbedder(settings.TRITON_URL)
    return LocalEmbedder()


# --- the neighbour space: image and listing text together ----------------------------------


def text_weight() -> float:
    w = float(settings.NEIGHBOUR_TEXT_WEIGHT)
    if not 0.0 <= w <= 1.0:
        raise StepUnavailable(f"NEIGHBOUR_TEXT_WEIGHT={w} must be within [0, 1]")
    return w


def space_version(emb: Embedder) -> str:
    """Names the vector space a reference index lives in: image model, text model and weight."""
    return f"{emb.version}|minilm-l6|text={text_weight():.2f}"


def listing_text(title: str, description: str = "") -> str:
    return f"{title}\n{description}"[:2000]


def text_vectors(texts: list[str]) -> np.ndarray:
    from detection.ml.text import embed_texts

    return embed_texts(texts)


def combine(image_vecs: np.ndarray, text_vecs: np.ndarray) -> np.ndarray:
    """Rows of [sqrt(1-w) * image, sqrt(w) * text]: unit vectors whose inner product is the
    weighted sum of the two cosine similarities."""
    w = text_weight()
    image_vecs = np.atleast_2d(image_vecs).astype(np.float32)
    text_vecs = np.atleast_2d(text_vecs).astype(np.float32)
    out = np.concatenate([np.sqrt(1 - w) * image_vecs, np.sqrt(w) * text_vecs], axis=1)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def image_vectors(images: list[ListingImage], emb: Embedder) -> dict[int, np.ndarray]:
    """Embeddings of the images, computing only the missing ones."""
    have = {
        e.image_id: np.frombuffer(bytes(e.vector), dtype=np.float32)
        for e in ImageEmbedding.objects.filter(image__in=images, model_version=emb.version)
    }
    missing = [img for img in images if img.id not in have]
    if missing:
        vectors = emb.embed([pil_image(img)[0] for img in missing])
        rows = []
        for img, vec in zip(missing, vectors, strict=True):
            vec = np.asarray(vec, dtype=np.float32)
            have[img.id] = vec
            rows.append(
                ImageEmbedding(
                    image=img, model_version=emb.version, source=emb.source, vector=vec.tobytes()
                )
            )
        ImageEmbedding.objects.bulk_create(rows, ignore_conflicts=True)
    return have
