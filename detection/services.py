"""Writes of the detection app: ingest of flagged listings, dead letters and their replay."""

import json
import logging
import uuid
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import OperationalError, transaction
from django.db.utils import IntegrityError
from django.utils import timezone

from detection.models import DeadLetter, DetectionEvent, Listing, ListingImage, Seller
from detection.signals import events_accepted
from detection.validation import Reason, ValidEvent, validate_event
from moderation_portal.tracing import trace

logger = logging.getLogger(__name__)

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"


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


def _payload_text(raw) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        return raw
    try:
        return json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(raw)


def _id_of(raw, key: str) -> str:
    value = raw.get(key) if isinstance(raw, dict) else None
    return value[:128] if isinstance(value, str) else ""


def dead_letters_store(*, items: list[tuple[object, list[Reason]]], source: str) -> list[DeadLetter]:
    letters = [
        DeadLetter(
            source=source,
            event_id=_id_of(raw, "event_id"),
            trace_id=_id_of(raw, "trace_id"),
            payload=_payload_text(raw),
            reasons=[r.as_dict() for r in reasons],
        )
        for raw, reasons in items
    ]
    created = DeadLetter.objects.bulk_create(letters)
    for letter in created:
        with trace(letter.trace_id or None):
            logger.warning(
                "event %s rejected: %s",
                letter.event_id or "(no id)",
                "; ".join(f"{r['field']}: {r['message']}" for r in letter.reasons),
            )
    return created


def _store_image_bytes(image) -> str:
    ext = image.content_type.split("/")[-1]
    name = f"images/{image.sha256[:2]}/{image.sha256}.{ext}"
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(image.data))
        if saved != name:  # a concurrent writer stored the same bytes first
            default_storage.delete(saved)
    return name


def _write_accepted(valid: list[ValidEvent], source: str) -> tuple[set[str], list[DetectionEvent]]:
    """Insert what is new; return (accepted event ids, their rows). Runs inside a transaction."""
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
    seller_ids = dict(Seller.objects.filter(external_id__in=sellers).values_list("external_id", "id"))

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
        update_fields=["title", "description", "price_amount", "price_currency", "category", "region", "language"],
    )
    listing_ids = dict(Listing.objects.filter(external_id__in=listings).values_list("external_id", "id"))

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
        DetectionEvent.objects.filter(event_id__in=[ev.event_id for ev in valid], ingest_batch=batch_id)
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
                    state=ListingImage.State.STORED if img.data is not None else ListingImage.State.PENDING_FETCH,
                )
            )
    ListingImage.objects.bulk_create(images, ignore_conflicts=True)
    if mine:
        events_accepted.send(sender=DetectionEvent, events=mine)
    return accepted_ids, mine


def events_ingest(*, events: list, source: str) -> list[Outcome]:
    """Validate and store a batch. Every event ends accepted, duplicate, or in the dead letters."""
    outcomes: list[Outcome] = [Outcome(index=i, status=REJECTED) for i in range(len(events))]
    valid: list[tuple[int, ValidEvent]] = []
    rejected: list[tuple[int, object, list[Reason]]] = []
    seen: set[str] = set()
    for i, raw in enumerate(events):
        try:
            ev, reasons = validate_event(raw)
        except Exception as exc:  # noqa: BLE001 - a validator bug must not lose the rest of the batch
            logger.exception("validation crashed on event %d", i)
            ev, reasons = None, [Reason("$", "validation_error", f"could not be validated: {type(exc).__name__}")]
        if ev is None:
            rejected.append((i, raw, reasons))
            outcomes[i].event_id = _id_of(raw, "event_id") or None
            continue
        outcomes[i].event_id = ev.event_id
        if ev.event_id in seen:
            outcomes[i].status = DUPLICATE
            continue
        seen.add(ev.event_id)
        valid.append((i, ev))

    if valid:
        for attempt in range(3):
            try:
                with transaction.atomic():
                    accepted_ids, _rows = _write_accepted([ev for _, ev in valid], source)
                break
            except (OperationalError, IntegrityError):
                # Deadlock or serialization failure against a concurrent batch: all or nothing
                # was written, so the batch is simply tried again.
                if attempt == 2:
                    raise
                logger.warning("ingest transaction failed, retrying (attempt %d)", attempt + 1, exc_info=True)
        for i, ev in valid:
            outcomes[i].status = ACCEPTED if ev.event_id in accepted_ids else DUPLICATE
            with trace(ev.trace_id):
                logger.info("event %s %s (%s)", ev.event_id, outcomes[i].status, source)

    if rejected:
        letters = dead_letters_store(items=[(raw, reasons) for _, raw, reasons in rejected], source=source)
        for (i, _raw, reasons), letter in zip(rejected, letters, strict=True):
            outcomes[i].reasons = [r.as_dict() for r in reasons]
            outcomes[i].dead_letter_id = letter.id
    return outcomes


def batch_reject(*, events: list, source: str, reason: Reason) -> list[Outcome]:
    """Keep every event of a batch that cannot be taken as a whole (such as one over the size limit)."""
    letters = dead_letters_store(items=[(raw, [reason]) for raw in events], source=source)
    return [
        Outcome(index=i, status=REJECTED, event_id=_id_of(raw, "event_id") or None, reasons=[reason.as_dict()], dead_letter_id=letter.id)
        for i, (raw, letter) in enumerate(zip(events, letters, strict=True))
    ]


def dead_letters_replay(*, letters: list[DeadLetter]) -> list[Outcome]:
    """Submit kept events again, one by one, recording what happened to each."""
    results = []
    for letter in letters:
        outcome = events_ingest(events=[letter.payload], source="replay")[0]
        DeadLetter.objects.filter(id=letter.id).update(
            state=DeadLetter.State.REJECTED_AGAIN if outcome.status == REJECTED else DeadLetter.State.REPLAYED,
            replay_count=letter.replay_count + 1,
            last_replayed_at=timezone.now(),
            last_replay_result=outcome.as_dict(),
        )
        if outcome.status == REJECTED and outcome.dead_letter_id:
            # The replay's own rejection is the same event again: keep one letter, not two.
            DeadLetter.objects.filter(id=outcome.dead_letter_id).delete()
        results.append(outcome)
    return results
