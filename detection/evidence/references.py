"""Known violations to compare new flags with, and the versioned index over them."""

import logging
import time
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from detection.models import ReferenceIndexVersion, ReferenceItem
from moderation_portal.core.audit import AuditAction, audit_record

logger = logging.getLogger(__name__)


def references_add_for_decision(
    *, decision_id: int, case_id: int, event_id: int, policy: str, action: str, decided_at: datetime
) -> int:
    """A confirmed violation: its listing's images join the known-bad hash bank (no model
    needed) and become reference embeddings (raises StepUnavailable without an image model,
    after the hashes are in). Returns the reference embeddings added. Safe to run twice, and a
    no-op for a decision taken back meanwhile (detection.evidence.banks)."""
    from detection.evidence.banks import bank_lock, decision_withdrawn, known_bad_add_for_decision
    from detection.evidence.vectors import (
        combine,
        embedder,
        image_vectors,
        listing_text,
        space_version,
        stored_images,
        text_vectors,
    )
    from detection.models import DetectionEvent

    event = DetectionEvent.objects.select_related("listing").get(id=event_id)
    images = stored_images(event)
    if not images:
        return 0
    known_bad_add_for_decision(
        decision_id=decision_id,
        case_id=case_id,
        policy=policy,
        action=action,
        decided_at=decided_at,
        images=images,
        label=event.listing.title,
        trace_id=event.trace_id,
    )
    emb = embedder()
    vectors = image_vectors(images, emb)
    text = text_vectors([listing_text(event.listing.title, event.listing.description)])[0]
    combined = combine(
        np.stack([vectors[img.id] for img in images]), np.repeat(text[None, :], len(images), axis=0)
    )
    rows = [
        ReferenceItem(
            source=ReferenceItem.Source.DECISION,
            policy=policy,
            title=event.listing.title[:1000],
            image=img,
            case_id=case_id,
            decision_id=decision_id,
            decision_action=action,
            decided_at=decided_at,
            model_version=space_version(emb),
            vector=vec.tobytes(),
        )
        for img, vec in zip(images, combined, strict=True)
    ]
    with transaction.atomic():
        bank_lock()
        if decision_withdrawn(decision_id=decision_id):
            logger.info("decision %s was taken back: no reference embeddings", decision_id)
            return 0
        ReferenceItem.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def reference_index_build(
    *, activate: bool = False, model_version: str | None = None, actor=None
) -> ReferenceIndexVersion:
    """Build a new immutable index version over every reference embedding of the current model."""
    from detection.evidence.vectors import embedder, space_version
    from detection.ml.ann import build_index

    version_of_model = model_version or space_version(embedder())
    rows = list(
        ReferenceItem.objects.filter(
            model_version=version_of_model, withdrawn_at__isnull=True
        ).values_list("id", "vector")
    )
    if not rows:
        raise ValueError(
            f"no reference embeddings for model {version_of_model}: decide or import some first"
        )
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vectors = np.stack([np.frombuffer(bytes(r[1]), dtype=np.float32) for r in rows])
    started = time.perf_counter()
    artifact = build_index(
        vectors, ids, settings.REFERENCE_INDEX_DIR, extra={"model_version": version_of_model}
    )
    manifest = artifact.manifest
    row = ReferenceIndexVersion.objects.create(
        version=artifact.version,
        path=str(artifact.path),
        model_version=version_of_model,
        size=len(rows),
        dim=int(vectors.shape[1]),
        build_seconds=float(manifest.get("build_seconds", time.perf_counter() - started)),
        recall_at_10=manifest.get("recall_at_10"),
        memory_bytes=manifest.get("memory_bytes"),
        manifest=manifest,
    )
    logger.info(
        "reference index %s built: %d vectors, recall@10 %s",
        row.version,
        row.size,
        row.recall_at_10,
    )
    audit_record(
        action=AuditAction.REFERENCE_INDEX_BUILT,
        obj=row,
        actor=actor,
        data={
            "version": row.version,
            "size": row.size,
            "recall_at_10": row.recall_at_10,
            "activated": activate,
        },
    )
    if activate:
        reference_index_activate(version=row, actor=actor)
    return row


def reference_index_activate(
    *, version: ReferenceIndexVersion, actor=None
) -> ReferenceIndexVersion:
    """Make `version` the one new flags are compared with (also a rollback), audited. Instant:
    the artifact already exists."""
    with transaction.atomic():
        previous = ReferenceIndexVersion.objects.filter(is_active=True).first()
        audit_record(
            action=AuditAction.REFERENCE_INDEX_ACTIVATED,
            obj=version,
            actor=actor,
            data={"version": version.version, "previous": previous.version if previous else None},
        )
        ReferenceIndexVersion.objects.filter(is_active=True).exclude(id=version.id).update(
            is_active=False
        )
        ReferenceIndexVersion.objects.filter(id=version.id).update(
            is_active=True, activated_at=timezone.now()
        )
    version.refresh_from_db()
    return version


def _jpeg(pil) -> bytes:
    import io

    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=85)
    return out.getvalue()


def known_bad_import(*, entries: list[dict], source_name: str) -> dict:
    """Import a bank of known-bad images: hashes always, reference embeddings when a model is set.

    Each entry: {"id", "policy", "title", "image": base64 bytes}.
    """
    import base64
    import io

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from PIL import Image

    from detection.evidence.vectors import (
        StepUnavailable,
        combine,
        embedder,
        space_version,
        text_vectors,
    )
    from detection.ml.phash import fingerprint_bytes, reference_hashes, to_signed64
    from detection.models import KnownBadImage
    from detection.policies import POLICY_CODES

    try:
        emb = embedder()
    except StepUnavailable as exc:
        emb, why = None, str(exc)
    imported, rejected, pils, refs = 0, [], [], []
    for n, entry in enumerate(entries):
        line = entry.get("_line", n + 1) if isinstance(entry, dict) else n + 1
        try:
            if not isinstance(entry, dict):
                raise ValueError("an entry must be a JSON object")
            if entry.get("policy") not in POLICY_CODES:
                raise ValueError(f"unknown policy {entry.get('policy')!r}")
            data = base64.b64decode(entry["image"], validate=True)
            if len(data) > settings.INGEST_MAX_IMAGE_BYTES:
                raise ValueError("image over the size limit")
            fp = fingerprint_bytes(data)
            pil = Image.open(io.BytesIO(data)).convert("RGB")
        except (KeyError, ValueError, OSError) as exc:
            rejected.append({"line": line, "reason": str(exc)[:200]})
            continue
        bank_ref = f"{source_name}:{entry.get('id', n)}"[:200]
        KnownBadImage.objects.update_or_create(
            bank_ref=bank_ref,
            defaults={
                "sha256": fp.sha256,
                "phash": to_signed64(fp.phash),
                "policy": entry["policy"],
                "reference_hashes": [to_signed64(h) for h in reference_hashes(pil)[1:]],
                "label": str(entry.get("title", ""))[:300],
            },
        )
        pils.append(pil)
        name = default_storage.save(
            f"references/{fp.sha256[:2]}/{fp.sha256}.jpg", ContentFile(_jpeg(pil))
        )
        refs.append((bank_ref, entry, name))
        imported += 1
    embedded = 0
    if emb is not None and pils:
        vectors = combine(
            emb.embed(pils), text_vectors([str(e.get("title", "")) for _, e, _ in refs])
        )
        space = space_version(emb)
        ReferenceItem.objects.bulk_create(
            [
                ReferenceItem(
                    source=ReferenceItem.Source.IMPORT,
                    policy=e["policy"],
                    title=str(e.get("title", ""))[:1000],
                    bank_ref=ref,
                    image_file=name,
                    decision_action="remove",
                    model_version=space,
                    vector=np.asarray(v, dtype=np.float32).tobytes(),
                )
                for (ref, e, name), v in zip(refs, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
        embedded = len(pils)
    return {
        "imported": imported,
        "embedded": embedded,
        "rejected": rejected,
        "embedding_note": None if emb is not None else why,
    }
