"""Storing flagged listings. Every event of a batch ends accepted, a duplicate, or a dead letter:
events in = accepted + duplicates + dead letters, whatever fails on the way.

Detection does not know what a case is: the caller passes `open_cases`, which is called inside the
transaction that inserts the events, with the rows this call inserted. An event and its case are
stored together or not at all.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from detection.intake.dead_letters import (
    dead_letter_payload,
    dead_letters_store,
    storable_id,
    storable_reason,
)
from detection.intake.metrics import ingest_record
from detection.intake.storable import escape_unstorable
from detection.intake.validation import Reason, ValidEvent, validate_event
from detection.models import (
    DeadLetter,
    DetectionEvent,
    Listing,
    ListingImage,
    Seller,
    ShadowScore,
)
from moderation_portal.core import metrics
from moderation_portal.core.tracing import trace

logger = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
TRANSIENT_ATTEMPTS = 3

# SQLSTATE classes where the same statement can succeed when tried again: connection exceptions,
# transaction rollback (serialization failure, deadlock), insufficient resources, operator
# intervention (shutdown, statement timeout). Anything else fails the same way every time.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
_LOCK_NOT_AVAILABLE = "55P03"

OpenCases = Callable[[list[DetectionEvent]], object]


@dataclass
class Outcome:
    index: int
    status: str
    event_id: str | None = None
    reasons: list[dict] = field(default_factory=list)
    dead_letter_id: int | None = None

    def as_dict(self) -> dict:
        out = {"index": self.index, "event_id": self.event_id, "status": self.status}
        if self.reasons:
            out["reasons"] = self.reasons
        if self.dead_letter_id is not None:
            out["dead_letter_id"] = self.dead_letter_id
        return out


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same write again can succeed."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if sqlstate is None:  # a lost connection, or SQLite's "database is locked"
        return True
    return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate == _LOCK_NOT_AVAILABLE


def _store_image_bytes(image) -> str:
    ext = image.content_type.split("/")[-1]
    name = f"images/{image.sha256[:2]}/{image.sha256}.{ext}"
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(image.data))
        if saved != name:  # a concurrent writer stored the same bytes first
            default_storage.delete(saved)
    return name


def _write_batch(valid: list[ValidEvent], source: str, open_cases: OpenCases) -> set[str]:
    """Insert what is new and open its cases; return the event ids this call inserted.
    Runs inside a transaction."""
    now = timezone.now()
    batch_id = uuid.uuid4()
    sellers: dict[str, Seller] = {}
    for ev in valid:
        s = ev.payload["seller"]
        sellers[s["id"]] = Seller(
            external_id=s["id"],
            account_created_at=ev.seller_created_at,
            prior_violations=s["prior_violations"],
            country=s["country"],
            first_seen_at=now,
            updated_at=now,
        )
    # Sorted so that concurrent batches take row locks in the same order (no deadlocks).
    Seller.objects.bulk_create(
        [sellers[k] for k in sorted(sellers)],
        update_conflicts=True,
        unique_fields=["external_id"],
        update_fields=["prior_violations", "country", "updated_at"],
    )
    seller_ids = dict(
        Seller.objects.filter(external_id__in=sellers).values_list("external_id", "id")
    )

    listings: dict[str, Listing] = {}
    for ev in valid:
        li = ev.payload["listing"]
        listings[li["id"]] = Listing(
            external_id=li["id"],
            seller_id=seller_ids[ev.payload["seller"]["id"]],
            title=li["title"],
            description=li["description"],
            price_amount=ev.price_amount,
            price_currency=li["price"]["currency"],
            category=li["category"],
            region=li["region"],
            language=li["language"],
            listed_at=ev.listing_created_at,
            first_seen_at=now,
        )
    Listing.objects.bulk_create(
        [listings[k] for k in sorted(listings)],
        update_conflicts=True,
        unique_fields=["external_id"],
        update_fields=[
            "title",
            "description",
            "price_amount",
            "price_currency",
            "category",
            "region",
            "language",
        ],
    )
    listing_ids = dict(
        Listing.objects.filter(external_id__in=listings).values_list("external_id", "id")
    )

    rows = []
    for ev in valid:
        det = ev.payload["detection"]
        policy, score = ev.top_policy
        rows.append(
            DetectionEvent(
                event_id=ev.event_id,
                trace_id=ev.trace_id,
                emitted_at=ev.emitted_at,
                received_at=now,
                listing_id=listing_ids[ev.payload["listing"]["id"]],
                model_name=det["model"],
                model_version=det["model_version"],
                scores=det["scores"],
                modality_scores=det["modality_scores"],
                reason_codes=det["reason_codes"],
                is_sample=bool(det.get("sample", False)),
                top_policy=policy,
                top_score=score,
                source=source,
                ingest_batch=batch_id,
            )
        )
    # The unique constraint on event_id decides, not a read before the write: of two workers
    # inserting the same event at once, exactly one row wins.
    DetectionEvent.objects.bulk_create(rows, ignore_conflicts=True)
    mine = list(
        DetectionEvent.objects.filter(
            event_id__in=[ev.event_id for ev in valid], ingest_batch=batch_id
        )
    )
    accepted_ids = {row.event_id for row in mine}

    images = []
    for ev in valid:
        if ev.event_id not in accepted_ids:
            continue
        listing_id = listing_ids[ev.payload["listing"]["id"]]
        for img in ev.images:
            images.append(
                ListingImage(
                    listing_id=listing_id,
                    external_id=img.external_id,
                    position=img.position,
                    source_url=img.url,
                    sha256=img.sha256,
                    content=_store_image_bytes(img) if img.data is not None else "",
                    content_type=img.content_type,
                    width=img.width,
                    height=img.height,
                    byte_size=len(img.data) if img.data is not None else None,
                    state=ListingImage.State.STORED
                    if img.data is not None
                    else ListingImage.State.PENDING_FETCH,
                )
            )
    ListingImage.objects.bulk_create(images, ignore_conflicts=True)
    event_pks = {row.event_id: row.pk for row in mine}
    ShadowScore.objects.bulk_create(
        [
            ShadowScore(event_id=event_pks[ev.event_id], model_version=v, policy=p, score=score)
            for ev in valid
            if ev.event_id in event_pks
            for v, p, score in ev.challenger_scores
        ]
    )
    if mine:
        open_cases(mine)
    return accepted_ids


def _write_in_transaction(valid: list[ValidEvent], source: str, open_cases: OpenCases) -> set[str]:
    """One transaction (a savepoint inside a caller's); tried again on transient errors only."""
    attempt = 1
    while True:
        try:
            with transaction.atomic():
                return _write_batch(valid, source, open_cases)
        except Exception as exc:
            if not is_transient(exc) or attempt >= TRANSIENT_ATTEMPTS:
                raise
            # Deadlock or serialization failure against a concurrent batch: nothing was written,
            # so the same batch is simply tried again.
            logger.warning(
                "ingest transaction failed, retrying (attempt %d)", attempt, exc_info=True
            )
            attempt += 1


def _storage_failure_reason(exc: BaseException) -> Reason:
    first_line = next(iter(str(exc).strip().splitlines()), "")
    detail = escape_unstorable(first_line)[:200]
    return Reason(
        "$",
        "storage_failed",
        f"could not be stored: {type(exc).__name__}" + (f": {detail}" if detail else ""),
    )


def _log_fields(ev: ValidEvent) -> dict:
    return {
        "listing_id": ev.payload["listing"]["id"],
        "seller_id": ev.payload["seller"]["id"],
        "model_version": ev.payload["detection"]["model_version"],
    }


def _failed(ev: ValidEvent, exc: Exception) -> Reason:
    with trace(ev.trace_id, **_log_fields(ev)):
        logger.error("event %s could not be stored", ev.event_id, exc_info=exc)
    return _storage_failure_reason(exc)


def _store(
    valid: list[ValidEvent], source: str, open_cases: OpenCases
) -> tuple[set[str], dict[str, Reason]]:
    """Store the batch in one transaction or, when that fails, event by event, so that only the
    events that cannot be stored are kept out. Returns the event ids inserted and, by event id,
    why an event could not be stored. Raises only on transient errors."""
    try:
        return _write_in_transaction(valid, source, open_cases), {}
    except Exception as exc:
        if is_transient(exc):
            raise
        batch_failure = exc
    if len(valid) == 1:
        return set(), {valid[0].event_id: _failed(valid[0], batch_failure)}
    logger.warning(
        "batch of %d could not be stored (%s); storing its events one by one",
        len(valid),
        type(batch_failure).__name__,
    )
    accepted: set[str] = set()
    failed: dict[str, Reason] = {}
    for ev in valid:
        try:
            accepted |= _write_in_transaction([ev], source, open_cases)
        except Exception as exc:
            if is_transient(exc):
                raise
            failed[ev.event_id] = _failed(ev, exc)
    return accepted, failed


def events_ingest(*, events: list, source: str, open_cases: OpenCases) -> list[Outcome]:
    """Validate and store a batch, opening cases for what is new through `open_cases`.

    Raises only on transient database errors (after retries), so the caller can try again; the
    events already stored then come back as duplicates.
    """
    outcomes: list[Outcome] = [Outcome(index=i, status=REJECTED) for i in range(len(events))]
    valid: list[tuple[int, ValidEvent]] = []
    rejected: list[tuple[int, list[Reason]]] = []
    seen: set[str] = set()
    for i, raw in enumerate(events):
        try:
            ev, reasons = validate_event(raw)
        except Exception as exc:
            logger.exception("validation crashed on event %d", i)
            ev, reasons = (
                None,
                [Reason("$", "validation_error", f"could not be validated: {type(exc).__name__}")],
            )
        if ev is None:
            rejected.append((i, reasons))
            outcomes[i].event_id = storable_id(raw, "event_id") or None
            continue
        outcomes[i].event_id = ev.event_id
        if ev.event_id in seen:
            outcomes[i].status = DUPLICATE
            continue
        seen.add(ev.event_id)
        valid.append((i, ev))

    if valid:
        accepted_ids, failures = _store([ev for _, ev in valid], source, open_cases)
        for i, ev in valid:
            if ev.event_id in failures:
                rejected.append((i, [failures[ev.event_id]]))
                continue
            outcomes[i].status = ACCEPTED if ev.event_id in accepted_ids else DUPLICATE
            if metrics.ENABLED and outcomes[i].status == ACCEPTED:
                for version, policy, score in ev.challenger_scores:
                    metrics.CHALLENGER_SCORE.labels(policy, version).observe(score)
            with trace(ev.trace_id, **_log_fields(ev)):
                logger.info("event %s %s (%s)", ev.event_id, outcomes[i].status, source)

    if rejected:
        rejected.sort(key=lambda item: item[0])
        letters = dead_letters_store(
            items=[(events[i], reasons) for i, reasons in rejected], source=source
        )
        for (i, _reasons), letter in zip(rejected, letters, strict=True):
            outcomes[i].reasons = letter.reasons
            outcomes[i].dead_letter_id = letter.id
    if metrics.ENABLED:
        stored = [ev for i, ev in valid if outcomes[i].status == ACCEPTED]
        ingest_record(source=source, outcomes=outcomes, stored=stored)
    return outcomes


def batch_reject(*, events: list, source: str, reason: Reason) -> list[Outcome]:
    """Keep every event of a batch that cannot be taken as a whole (such as one over the size
    limit).
    """
    letters = dead_letters_store(items=[(raw, [reason]) for raw in events], source=source)
    reasons = [storable_reason(reason).as_dict()]
    outcomes = [
        Outcome(
            index=i,
            status=REJECTED,
            event_id=letter.event_id or None,
            reasons=reasons,
            dead_letter_id=letter.id,
        )
        for i, letter in enumerate(letters)
    ]
    if metrics.ENABLED:
        ingest_record(source=source, outcomes=outcomes)
    return outcomes


def dead_letters_replay(*, letters: list[DeadLetter], open_cases: OpenCases) -> list[Outcome]:
    """Submit kept events again, one by one, recording what happened to each."""
    results = []
    for letter in letters:
        outcome = events_ingest(
            events=[dead_letter_payload(letter)], source="replay", open_cases=open_cases
        )[0]
        DeadLetter.objects.filter(id=letter.id).update(
            state=DeadLetter.State.REJECTED_AGAIN
            if outcome.status == REJECTED
            else DeadLetter.State.REPLAYED,
            replay_count=letter.replay_count + 1,
            last_replayed_at=timezone.now(),
            last_replay_result=outcome.as_dict(),
        )
        if outcome.status == REJECTED and outcome.dead_letter_id:
            # The replay's own rejection is the same event again: keep one letter, not two.
            DeadLetter.objects.filter(id=outcome.dead_letter_id).delete()
        results.append(outcome)
    return results
