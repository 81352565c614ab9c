"""The known-bad hash bank's entries from decisions, and taking a decision's evidence back.

A violation a person confirmed puts its listing's images into the bank (`KnownBadImage`, source
`decision`, the decision as provenance) beside its reference embeddings
(detection.evidence.references). When a person takes the decision back (an overturn on appeal,
a QA correction), both are withdrawn: soft, so the rows and their history stay, but matching and
the neighbour search leave them out.

The bank's version is the number of changes it has seen: entries added plus entries withdrawn
(rows are never deleted), so it only grows, and "bank v12" on a hash step says which bank a flag
was compared with. Changes to decision entries and withdrawals hold one lock
(`bank_lock`) until their transaction ends, so each audited change carries its own version, and
a reference task running late for a decision already taken back cannot add it live.

Light on purpose: the decision writer imports this module, so hashing (numpy, PIL) is imported
inside the functions that need it.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from detection.models import (
    EvidenceWithdrawal,
    KnownBadImage,
    ListingImage,
    ReferenceItem,
)
from moderation_portal.core.audit import SYSTEM, AuditAction, audit_event
from moderation_portal.core.models import AuditEvent

logger = logging.getLogger(__name__)

BANK_LOCK_CLASS = 7302  # the advisory-lock namespace of the known-bad bank (7301: outbox order)
MAX_REASON = 300


@dataclass(frozen=True)
class BankState:
    size: int  # live entries: what a flag is compared with
    version: int  # changes so far: entries added plus entries withdrawn
    cache_key: tuple  # changes whenever an entry is added or withdrawn


def bank_state() -> BankState:
    """One query."""
    stats = KnownBadImage.objects.aggregate(
        rows=Count("id"),
        last=Max("id"),
        withdrawn=Count("withdrawn_at"),
        last_withdrawn=Max("withdrawn_at"),
    )
    rows, withdrawn = stats["rows"], stats["withdrawn"]
    return BankState(
        size=rows - withdrawn,
        version=rows + withdrawn,
        cache_key=(rows, stats["last"], withdrawn, stats["last_withdrawn"]),
    )


def bank_lock() -> None:
    """Hold the bank's lock until this transaction ends (PostgreSQL; SQLite serialises writes)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [BANK_LOCK_CLASS])


def decision_withdrawn(*, decision_id: int) -> bool:
    return EvidenceWithdrawal.objects.filter(decision_id=decision_id).exists()


def known_bad_add_for_decision(
    *,
    decision_id: int,
    case_id: int,
    policy: str,
    action: str,
    decided_at: datetime,
    images: list[ListingImage],
    label: str = "",
    trace_id: str = "",
) -> list[KnownBadImage]:
    """A confirmed violation's stored images join the bank, each audited with the bank version.
    Safe to run twice: an image the decision already put in is not added again. Returns the
    entries added now."""
    from detection.evidence.vectors import pil_image
    from detection.ml.phash import fingerprint_bytes, reference_hashes, to_signed64

    fingerprints = {}
    for img in images:
        pil, data = pil_image(img)
        fp = fingerprint_bytes(data)
        fingerprints[img.id] = (
            fp,
            [to_signed64(h) for h in reference_hashes(pil)[1:]],
        )
    with transaction.atomic():
        bank_lock()
        if decision_withdrawn(decision_id=decision_id):
            logger.info("decision %s was taken back: its images stay out of the bank", decision_id)
            return []
        have = set(
            KnownBadImage.objects.filter(
                source=KnownBadImage.Source.DECISION, decision_id=decision_id
            ).values_list("image_id", flat=True)
        )
        added = KnownBadImage.objects.bulk_create(
            [
                KnownBadImage(
                    source=KnownBadImage.Source.DECISION,
                    sha256=fingerprints[img.id][0].sha256,
                    phash=to_signed64(fingerprints[img.id][0].phash),
                    reference_hashes=fingerprints[img.id][1],
                    policy=policy,
                    label=label[:300],
                    bank_ref=f"decision:{decision_id}:image:{img.id}",
                    image=img,
                    case_id=case_id,
                    decision_id=decision_id,
                    decision_action=action,
                    decided_at=decided_at,
                )
                for img in images
                if img.id not in have
            ]
        )
        if added:
            version = bank_state().version
            AuditEvent.objects.bulk_create(
                [
                    audit_event(
                        action=AuditAction.KNOWN_BAD_ADDED,
                        object_type="knownbadimage",
                        object_id=kb.pk,
                        label=SYSTEM,
                        trace_id=trace_id,
                        data={
                            "bank_version": version,
                            "decision_id": decision_id,
                            "case_id": case_id,
                            "image_id": kb.image_id,
                            "policy": policy,
                            "sha256": kb.sha256,
                            "phash": f"{kb.phash & (2**64 - 1):016x}",
                        },
                    )
                    for kb in added
                ]
            )
            logger.info(
                "decision %s added %d known-bad images (bank v%s)", decision_id, len(added), version
            )
    return added


def evidence_withdraw_for_decisions(
    *,
    decision_ids: list[int],
    by_decision_id: dict[int, int],
    reason: str,
    trace_ids: dict[int, str] | None = None,
) -> dict:
    """Take the evidence of decisions a person took back out of matching: their known-bad
    entries and reference embeddings are withdrawn (kept, with who took them back and why),
    audited one row each. `by_decision_id` maps each decision to the one that took it back;
    `trace_ids` optionally each decision to its trace. Safe to run twice. Runs in the caller's
    transaction when there is one."""
    trace_ids = trace_ids or {}
    reason = reason[:MAX_REASON]
    now = timezone.now()
    with transaction.atomic():
        bank_lock()
        EvidenceWithdrawal.objects.bulk_create(
            [
                EvidenceWithdrawal(
                    decision_id=decision_id,
                    withdrawn_by_decision_id=by_decision_id[decision_id],
                    reason=reason,
                    created_at=now,
                )
                for decision_id in decision_ids
            ],
            ignore_conflicts=True,
        )
        known_bad = list(
            KnownBadImage.objects.filter(
                source=KnownBadImage.Source.DECISION,
                decision_id__in=decision_ids,
                withdrawn_at__isnull=True,
            ).only("id", "decision_id", "policy", "sha256")
        )
        references = list(
            ReferenceItem.objects.filter(
                source=ReferenceItem.Source.DECISION,
                decision_id__in=decision_ids,
                withdrawn_at__isnull=True,
            ).only("id", "decision_id", "model_version")
        )
        for decision_id in decision_ids:
            KnownBadImage.objects.filter(
                id__in=[kb.id for kb in known_bad if kb.decision_id == decision_id]
            ).update(
                withdrawn_at=now,
                withdrawn_by_decision_id=by_decision_id[decision_id],
                withdrawn_reason=reason,
            )
            ReferenceItem.objects.filter(
                id__in=[ref.id for ref in references if ref.decision_id == decision_id]
            ).update(withdrawn_at=now, withdrawn_by_decision_id=by_decision_id[decision_id])
        version = bank_state().version
        AuditEvent.objects.bulk_create(
            [
                audit_event(
                    action=AuditAction.KNOWN_BAD_WITHDRAWN,
                    object_type="knownbadimage",
                    object_id=kb.id,
                    label=SYSTEM,
                    trace_id=trace_ids.get(kb.decision_id, ""),
                    created_at=now,
                    data={
                        "bank_version": version,
                        "decision_id": kb.decision_id,
                        "withdrawn_by_decision_id": by_decision_id[kb.decision_id],
                        "reason": reason,
                        "policy": kb.policy,
                        "sha256": kb.sha256,
                    },
                )
                for kb in known_bad
            ]
            + [
                audit_event(
                    action=AuditAction.REFERENCE_WITHDRAWN,
                    object_type="referenceitem",
                    object_id=ref.id,
                    label=SYSTEM,
                    trace_id=trace_ids.get(ref.decision_id, ""),
                    created_at=now,
                    data={
                        "decision_id": ref.decision_id,
                        "withdrawn_by_decision_id": by_decision_id[ref.decision_id],
                        "reason": reason,
                        "model_version": ref.model_version,
                    },
                )
                for ref in references
            ]
        )
    if known_bad or references:
        logger.info(
            "evidence of decisions %s withdrawn (%s): %d known-bad images, %d references, bank v%s",
            decision_ids,
            reason,
            len(known_bad),
            len(references),
            version,
        )
    return {"known_bad": len(known_bad), "references": len(references), "bank_version": version}
