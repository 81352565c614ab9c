"""Enrichment of a flag: Grad-CAM heatmaps, similar known violations, perceptual-hash matches.

Each step is independent and idempotent: it computes only what is missing (unique constraints
decide), one failing never blocks the others or the case, and a killed worker's step simply
runs again (tasks are acknowledged late). Heavy code lives in `detection.ml`, imported here
inside functions, so the web process never loads torch.
"""

import io
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from detection.models import (
    DetectionEvent,
    EnrichmentStep,
    HashMatch,
    Heatmap,
    ImageEmbedding,
    KnownBadImage,
    ListingImage,
    Neighbour,
    ReferenceIndexVersion,
    ReferenceItem,
)
from detection.signals import enrichment_step_finished

logger = logging.getLogger(__name__)
STEPS = [EnrichmentStep.Name.HEATMAPS, EnrichmentStep.Name.NEIGHBOURS, EnrichmentStep.Name.HASHES]


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


def _pil(image: ListingImage):
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
        vectors = emb.embed([_pil(img)[0] for img in missing])
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


# --- the steps -------------------------------------------------------------------------------


def step_heatmaps(event: DetectionEvent) -> str:
    model = image_model()
    if event.top_policy not in model.policies:
        raise StepUnavailable(f"the model has no head for {event.top_policy}")
    images = stored_images(event)
    if not images:
        return "no stored images"
    done = set(
        Heatmap.objects.filter(
            event=event, policy=event.top_policy, model_version=model.version
        ).values_list("image_id", flat=True)
    )
    todo = [img for img in images if img.id not in done]
    if todo:
        from detection.ml.gradcam import policy_heatmaps

        maps = policy_heatmaps(
            model, [_pil(img)[0] for img in todo], event.top_policy, background="blur"
        )
        for img, hm in zip(todo, maps, strict=True):
            base = f"heatmaps/{event.id}/{img.id}-{event.top_policy}"
            raw = io.BytesIO()
            np.save(raw, hm.cam.astype(np.float32))
            overlay_name = default_storage.save(f"{base}.png", ContentFile(hm.overlay_png))
            raw_name = default_storage.save(f"{base}.npy", ContentFile(raw.getvalue()))
            x, y = hm.peak()
            Heatmap.objects.bulk_create(
                [
                    Heatmap(
                        image=img,
                        event=event,
                        policy=event.top_policy,
                        model_version=model.version,
                        model_label=model.label[:300],
                        overlay=overlay_name,
                        raw=raw_name,
                        probability=hm.probability,
                        peak_x=x,
                        peak_y=y,
                        empty=hm.empty,
                    )
                ],
                ignore_conflicts=True,
            )
    return f"{len(images)} image{'s' if len(images) != 1 else ''} · {model.label}"


_index_cache: dict[str, object] = {}


def _load_index(version: ReferenceIndexVersion):
    with _lock:
        index = _index_cache.get(version.version)
        if index is None:
            from detection.ml.ann import load_index

            _index_cache.clear()
            index = _index_cache[version.version] = load_index(version.path)
    return index


def step_neighbours(event: DetectionEvent) -> str:
    active = ReferenceIndexVersion.objects.filter(is_active=True).first()
    if active is None:
        raise StepUnavailable(
            "no reference index is active (manage.py build_reference_index --activate)"
        )
    emb = embedder()
    space = space_version(emb)
    if active.model_version != space:
        raise StepUnavailable(
            f"the active index was built for {active.model_version}, embeddings come from {space}"
        )
    if Neighbour.objects.filter(event=event, index_version=active).exists():
        return f"index {active.version}"
    images = stored_images(event)
    if not images:
        return "no stored images"
    vectors = image_vectors(images, emb)
    index = _load_index(active)
    best: dict[int, tuple[float, int]] = {}
    text = text_vectors([listing_text(event.listing.title, event.listing.description)])[0]
    queries = combine(
        np.stack([vectors[img.id] for img in images]), np.repeat(text[None, :], len(images), axis=0)
    )
    ids, sims = index.search(queries, 10)
    for row, img in enumerate(images):
        for ref_id, sim in zip(ids[row], sims[row], strict=True):
            if int(ref_id) < 0 or not np.isfinite(sim):
                continue
            if int(ref_id) not in best or sim > best[int(ref_id)][0]:
                best[int(ref_id)] = (float(sim), img.id)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[: settings.NEIGHBOURS_SHOWN]
    existing = set(
        ReferenceItem.objects.filter(id__in=[r for r, _ in ranked]).values_list("id", flat=True)
    )
    rows = [
        Neighbour(
            event=event,
            index_version=active,
            rank=rank,
            reference_id=ref_id,
            image_id=image_id,
            similarity=sim,
        )
        for rank, (ref_id, (sim, image_id)) in enumerate(
            (r for r in ranked if r[0] in existing), start=1
        )
    ]
    Neighbour.objects.bulk_create(rows, ignore_conflicts=True)
    return f"{len(rows)} from index {active.version}"


_matcher_cache: dict[tuple, object] = {}


def _matcher():
    from django.db.models import Count, Max

    stats = KnownBadImage.objects.aggregate(n=Count("id"), last=Max("id"))
    key = (stats["n"], stats["last"])
    with _lock:
        matcher = _matcher_cache.get(key)
        if matcher is None:
            from detection.ml.phash import HashMatcher, from_signed64

            entries = [
                (
                    kb.id,
                    kb.sha256,
                    [from_signed64(kb.phash), *[from_signed64(h) for h in kb.reference_hashes]],
                )
                for kb in KnownBadImage.objects.only("id", "sha256", "phash", "reference_hashes")
            ]
            _matcher_cache.clear()
            matcher = _matcher_cache[key] = HashMatcher(entries)
    return matcher, stats["n"]


def step_hashes(event: DetectionEvent) -> str:
    from detection.ml.phash import PHASH_MATCH_THRESHOLD, fingerprint_bytes

    matcher, bank_size = _matcher()
    images = stored_images(event)
    found = 0
    rows = []
    for img in images:
        _, data = _pil(img)
        fp = fingerprint_bytes(data)
        for m in matcher.match(fp):
            rows.append(
                HashMatch(
                    event=event, image=img, known_bad_id=m.ref_id, kind=m.kind, distance=m.distance
                )
            )
            found += 1
    HashMatch.objects.bulk_create(rows, ignore_conflicts=True)
    matches = f"{found} match{'es' if found != 1 else ''}"
    return (
        f"{matches} against {bank_size} known-bad images (pHash threshold {PHASH_MATCH_THRESHOLD})"
    )


RUNNERS = {
    EnrichmentStep.Name.HEATMAPS: step_heatmaps,
    EnrichmentStep.Name.NEIGHBOURS: step_neighbours,
    EnrichmentStep.Name.HASHES: step_hashes,
}


def steps_create(*, event_ids: list[int]) -> None:
    EnrichmentStep.objects.bulk_create(
        [EnrichmentStep(event_id=eid, name=name) for eid in event_ids for name in STEPS],
        ignore_conflicts=True,
    )


def _finish(step_id: int, event_id: int, name: str, state: str, detail: str) -> None:
    EnrichmentStep.objects.filter(id=step_id).exclude(state=EnrichmentStep.State.DONE).update(
        state=state, detail=detail[:500], finished_at=timezone.now(), updated_at=timezone.now()
    )
    enrichment_step_finished.send(sender=EnrichmentStep, event_id=event_id, step=name, state=state)


def step_run(*, event_id: int, name: str, final_attempt: bool = True) -> str:
    """Run one step for one event. Returns the step's state; raises StepTransient to retry."""
    from moderation_portal.core.tracing import trace

    step, _ = EnrichmentStep.objects.get_or_create(event_id=event_id, name=name)
    if step.state in (EnrichmentStep.State.DONE, EnrichmentStep.State.SKIPPED):
        return step.state
    EnrichmentStep.objects.filter(id=step.id).update(
        state=EnrichmentStep.State.RUNNING,
        attempts=F("attempts") + 1,
        started_at=timezone.now(),
        updated_at=timezone.now(),
    )
    event = DetectionEvent.objects.select_related("listing").get(id=event_id)
    with trace(event.trace_id):
        try:
            with transaction.atomic():
                detail = RUNNERS[name](event)
        except StepUnavailable as exc:
            logger.info("enrichment %s for event %s not available: %s", name, event.event_id, exc)
            _finish(step.id, event_id, name, EnrichmentStep.State.SKIPPED, str(exc))
            return EnrichmentStep.State.SKIPPED
        except StepTransient as exc:
            logger.warning(
                "enrichment %s for event %s failed, a retry may help: %s", name, event.event_id, exc
            )
            if final_attempt:
                _finish(
                    step.id,
                    event_id,
                    name,
                    EnrichmentStep.State.FAILED,
                    f"{exc} (gave up after retries)",
                )
                return EnrichmentStep.State.FAILED
            EnrichmentStep.objects.filter(id=step.id).update(
                state=EnrichmentStep.State.PENDING, detail=f"retrying: {exc}"[:500]
            )
            raise
        except Exception as exc:
            logger.exception("enrichment %s for event %s failed", name, event.event_id)
            _finish(
                step.id, event_id, name, EnrichmentStep.State.FAILED, f"{type(exc).__name__}: {exc}"
            )
            return EnrichmentStep.State.FAILED
        logger.info("enrichment %s for event %s done: %s", name, event.event_id, detail)
        _finish(step.id, event_id, name, EnrichmentStep.State.DONE, detail)
    return EnrichmentStep.State.DONE
