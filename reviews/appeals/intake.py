"""Appeals from the marketplace: validated, idempotent on `appeal_id`, and nothing lost: every
refusal is kept as a `RefusedAppeal` with its reason code, the request as it came, and who sent
it.

Answers: 201 a new appeal; 200 the same `appeal_id` again (the same appeal); 404
`unknown_enforcement`; 409 `already_appealed` (another appeal for the same action); 422
`appeal_window_closed`, `seller_mismatch`, `not_appealable` (a reversal), `already_reversed`, or
`invalid` (the fields).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from detection.intake.storable import escape_unstorable, is_storable
from detection.models import Listing
from moderation_portal.core import metrics
from moderation_portal.core.audit import AuditAction, audit_record
from moderation_portal.core.tracing import trace
from reviews.appeals.models import Appeal, RefusedAppeal
from reviews.enforcement.models import Enforcement, EnforcementAction
from reviews.enforcement.services import REVERSAL_OF

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
FIELDS = ("appeal_id", "enforcement_id", "seller_id", "statement", "submitted_at")
CLOCK_SKEW = timedelta(minutes=5)
# The appealed action's weight in the appeals queue: suspension first.
SEVERITY = {
    EnforcementAction.SUSPEND_SELLER: 3,
    EnforcementAction.REMOVE_LISTING: 2,
    EnforcementAction.WARN_SELLER: 1,
}


@dataclass
class Answer:
    status: int
    appeal: Appeal | None = None
    code: str = ""
    message: str = ""
    details: dict | None = None


def _keep(payload: object, user, *, code: str, message: str) -> None:
    data = payload if isinstance(payload, dict) else {}
    text = json.dumps(payload, ensure_ascii=True, default=str)[:200_000]
    RefusedAppeal.objects.create(
        code=code,
        message=message[:500],
        appeal_id=escape_unstorable(str(data.get("appeal_id", "")))[:128],
        enforcement_ref=escape_unstorable(str(data.get("enforcement_id", "")))[:64],
        payload=text,
        submitted_by=user if getattr(user, "pk", None) else None,
    )


def _refuse(payload, user, status: int, code: str, message: str, details=None) -> Answer:
    _keep(payload, user, code=code, message=message)
    return Answer(status=status, code=code, message=message, details=details)


def _field_problems(payload: object) -> tuple[dict[str, str], dict]:
    if not isinstance(payload, dict):
        return {"body": "Send a JSON object with " + ", ".join(FIELDS) + "."}, {}
    problems: dict[str, str] = {}
    clean: dict = {}
    unknown = set(payload) - set(FIELDS)
    if unknown:
        problems["body"] = "Unknown fields: " + ", ".join(sorted(map(str, unknown)))[:200]
    for key in ("appeal_id", "seller_id"):
        value = payload.get(key)
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            problems[key] = "Required: 1-128 letters, digits or . _ : -"
        else:
            clean[key] = value
    enforcement_id = payload.get("enforcement_id")
    if isinstance(enforcement_id, bool) or not isinstance(enforcement_id, int):
        problems["enforcement_id"] = "Required: the enforcement_id the seller received."
    elif not 1 <= enforcement_id <= 2**63 - 1:
        problems["enforcement_id"] = "Out of range."
    else:
        clean["enforcement_id"] = enforcement_id
    statement = payload.get("statement")
    limit = settings.APPEAL_MAX_STATEMENT_CHARS
    if not isinstance(statement, str) or not statement.strip():
        problems["statement"] = "Required: the seller's statement."
    elif len(statement) > limit:
        problems["statement"] = f"At most {limit} characters."
    elif not is_storable(statement):
        problems["statement"] = "Contains characters that cannot be stored (NUL, lone surrogates)."
    else:
        clean["statement"] = statement
    raw = payload.get("submitted_at")
    try:
        when = parse_datetime(raw) if isinstance(raw, str) and len(raw) <= 64 else None
    except ValueError:  # well formed, but no such time (minute 60, February 30)
        when = None
    if when is None or when.tzinfo is None:
        problems["submitted_at"] = "Required: an ISO 8601 time with its offset."
    elif when > timezone.now() + CLOCK_SKEW:
        problems["submitted_at"] = "Lies in the future."
    else:
        clean["submitted_at"] = when
    return problems, clean


def window_closes_at(enforcement: Enforcement) -> datetime:
    """The window runs from when the enforcement went out to the marketplace (its first
    delivery attempt, the moment `appealable_until` is counted from), or from when it was
    decided if it has not gone out yet."""
    message = getattr(enforcement, "message", None)
    start = (message.first_attempt_at if message else None) or enforcement.created_at
    return start + timedelta(days=settings.APPEAL_WINDOW_DAYS)


def appeal_open(*, payload: object, user) -> Answer:
    problems, clean = _field_problems(payload)
    if problems:
        return _refuse(payload, user, 422, "invalid", "The appeal is not valid.", details=problems)
    existing = Appeal.objects.filter(appeal_id=clean["appeal_id"]).first()
    if existing is not None:
        return Answer(status=200, appeal=existing)
    enforcement = (
        Enforcement.objects.select_related("decision__case", "listing__seller", "message")
        .filter(pk=clean["enforcement_id"])
        .first()
    )
    if enforcement is None:
        return _refuse(payload, user, 404, "unknown_enforcement", "No such enforcement action.")
    seller = enforcement.listing.seller
    if seller.external_id != clean["seller_id"]:
        return _refuse(
            payload, user, 422, "seller_mismatch", "That enforcement action is not this seller's."
        )
    if enforcement.action not in REVERSAL_OF:
        return _refuse(
            payload,
            user,
            422,
            "not_appealable",
            f"{enforcement.action} restores; only restrictions can be appealed.",
        )
    if enforcement.reversals.exists():
        return _refuse(
            payload, user, 422, "already_reversed", "That action has been reversed already."
        )
    if Appeal.objects.filter(enforcement=enforcement).exists():
        return _refuse(
            payload, user, 409, "already_appealed", "That enforcement action has an appeal already."
        )
    closes = window_closes_at(enforcement)
    if clean["submitted_at"] > closes:
        return _refuse(
            payload,
            user,
            422,
            "appeal_window_closed",
            f"The appeal window closed at {closes.isoformat()} "
            f"({settings.APPEAL_WINDOW_DAYS} days).",
        )
    now = timezone.now()
    decision = enforcement.decision
    try:
        with transaction.atomic():
            appeal = Appeal.objects.create(
                appeal_id=clean["appeal_id"],
                enforcement=enforcement,
                decision=decision,
                case=decision.case,
                seller=seller,
                statement=clean["statement"],
                submitted_at=clean["submitted_at"],
                received_at=now,
                severity=SEVERITY[EnforcementAction(enforcement.action)],
                sla_due_at=now + timedelta(hours=settings.APPEAL_SLA_HOURS),
                seller_reach=Listing.objects.filter(seller=seller).count(),
                trace_id=decision.trace_id,
            )
            audit_record(
                action=AuditAction.APPEAL_OPENED,
                obj=appeal,
                actor=user,
                trace_id=decision.trace_id,
                data={"appeal_id": appeal.appeal_id, "enforcement_id": enforcement.pk},
            )
            if metrics.ENABLED:
                labels = (decision.policy_id or "none", decision.source)
                transaction.on_commit(lambda: metrics.APPEALS.labels(*labels).inc())
    except IntegrityError:
        again = Appeal.objects.filter(appeal_id=clean["appeal_id"]).first()
        if again is not None:  # the same appeal, sent twice at once
            return Answer(status=200, appeal=again)
        return _refuse(
            payload,
            user,
            409,
            "already_appealed",
            "That enforcement action has an appeal already.",
        )
    with trace(
        decision.trace_id,
        case_id=decision.case_id,
        listing_id=enforcement.listing.external_id,
        seller_id=seller.external_id,
    ):
        logger.info("appeal %s opened against enforcement %s", appeal.pk, enforcement.pk)
    return Answer(status=201, appeal=appeal)
