"""Enrichment of a flag: Grad-CAM heatmaps, similar known violations, perceptual-hash matches.

Each step is independent and idempotent: it computes only what is missing (unique constraints
decide), one failing never blocks the others or the case, and a killed worker's step simply
runs again (tasks are acknowledged late). The model and the vectors the steps compare live in
`detection.evidence.vectors`; heavy code stays in `detection.ml`, imported inside functions, so
the web process never loads torch.
"""

import io
import logging
import threading
import time

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from detection.evidence.vectors import (
    StepTransient,
    StepUnavailable,
    combine,
    embedder,
    image_model,
    image_vectors,
    listing_text,
    pil_image,
    space_version,
    stored_images,
    text_vectors,
)
from detection.models import (
    DetectionEvent,
    EnrichmentStep,
    HashMatch,
    Heatmap,
    KnownBadImage,
    Neighbour,
    ReferenceIndexVersion,
    ReferenceItem,
)
from detection.signals import enrichment_step_finished
from moderation_portal.core import metrics

logger = logging.getLogger(__name__)
# Guards this module's per-process caches (loaded indexes, the hash matcher).
_lock = threading.Lock()
STEPS = [EnrichmentStep.Name.HEATMAPS, EnrichmentStep.Name.NEIGHBOURS, EnrichmentStep.Name.HASHES]


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
            model, [pil_image(img)[0] for img in todo], event.top_policy, background="blur"
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
    # an index version is immutable: references taken back since it was built are left out here
    existing = set(
        ReferenceItem.objects.filter(
            id__in=[r for r, _ in ranked], withdrawn_at__isnull=True
        ).values_list("id", flat=True)
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
    from detection.evidence.banks import bank_state

    bank = bank_state()
    key = bank.cache_key  # moves when an entry is added or withdrawn
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
                for kb in KnownBadImage.objects.filter(withdrawn_at__isnull=True).only(
                    "id", "sha256", "phash", "reference_hashes"
                )
            ]
            _matcher_cache.clear()
            matcher = _matcher_cache[key] = HashMatcher(entries)
    return matcher, bank


def step_hashes(event: DetectionEvent) -> str:
    from detection.ml.phash import PHASH_MATCH_THRESHOLD, fingerprint_bytes

    matcher, bank = _matcher()
    images = stored_images(event)
    found = 0
    rows = []
    for img in images:
        _, data = pil_image(img)
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
        f"{matches} against {bank.size} known-bad images (bank v{bank.version}, "
        f"pHash threshold {PHASH_MATCH_THRESHOLD})"
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


def _finish(
    step_id: int, event_id: int, name: str, state: str, detail: str, started: float
) -> None:
    EnrichmentStep.objects.filter(id=step_id).exclude(state=EnrichmentStep.State.DONE).update(
        state=state, detail=detail[:500], finished_at=timezone.now(), updated_at=timezone.now()
    )
    _step_record(name, state, started)
    enrichment_step_finished.send(sender=EnrichmentStep, event_id=event_id, step=name, state=state)


def _step_record(name: str, outcome: str, started: float) -> None:
    """Outcomes: done, failed, skipped (not available), retry (a transient failure)."""
    if metrics.ENABLED:
        metrics.ENRICHMENT_STEPS.labels(name, outcome).inc()
        metrics.ENRICHMENT_DURATION.labels(name).observe(time.monotonic() - started)


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
    event = DetectionEvent.objects.select_related("listing__seller").get(id=event_id)
    started = time.monotonic()
    with trace(
        event.trace_id,
        listing_id=event.listing.external_id,
        seller_id=event.listing.seller.external_id,
        model_version=event.model_version,
    ):
        try:
            with transaction.atomic():
                detail = RUNNERS[name](event)
        except StepUnavailable as exc:
            logger.info("enrichment %s for event %s not available: %s", name, event.event_id, exc)
            _finish(step.id, event_id, name, EnrichmentStep.State.SKIPPED, str(exc), started)
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
                    started,
                )
                return EnrichmentStep.State.FAILED
            EnrichmentStep.objects.filter(id=step.id).update(
                state=EnrichmentStep.State.PENDING, detail=f"retrying: {exc}"[:500]
            )
            _step_record(name, "retry", started)
            raise
        except Exception as exc:
            logger.exception("enrichment %s for event %s failed", name, event.event_id)
            _finish(
                step.id,
                event_id,
                name,
                EnrichmentStep.State.FAILED,
                f"{type(exc).__name__}: {exc}",
                started,
            )
            return EnrichmentStep.State.FAILED
        logger.info("enrichment %s for event %s done: %s", name, event.event_id, detail)
        _finish(step.id, event_id, name, EnrichmentStep.State.DONE, detail, started)
    return EnrichmentStep.State.DONE
