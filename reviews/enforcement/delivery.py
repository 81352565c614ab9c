"""Delivering the enforcement outbox to the marketplace's webhook, and sending it again.

The outbox's state lives in PostgreSQL (`OutboxMessage`); this module moves it forward:

- `messages_claim` takes due messages by a conditional update to `sending` with a lease
  (`SELECT ... FOR UPDATE SKIP LOCKED` where the database has it), so several workers can run at
  once and a killed worker's message is taken again when its lease has run out. A message is
  never claimed while an earlier (lower id) message of its listing or its seller is undelivered:
  the marketplace sees the actions about one listing or seller in the order they were decided.
- `message_send` makes one attempt (`reviews.enforcement.webhooks.deliver`, signed, with the
  message's stable `webhook_id`), writes its `DeliveryAttempt` and moves the message on:
  delivered, retrying on the schedule (with jitter, or later when the receiver says
  Retry-After), failed when the schedule is exhausted. A 410 Gone disables the endpoint: nothing
  is sent until an operator enables it again (`endpoint_enable`).
- `message_body` fixes the webhook body at the first attempt; every retry sends the same bytes.
- `deliveries_run` is what the periodic task does; `messages_redeliver` is what
  `manage.py redeliver_enforcements` does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

import httpx2
from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from moderation_portal.core import metrics
from moderation_portal.core.audit import SYSTEM, AuditAction, audit_record
from moderation_portal.core.tracing import trace
from reviews.appeals.models import Appeal
from reviews.enforcement import webhooks
from reviews.enforcement.metrics import delivery_record
from reviews.enforcement.models import (
    DeliveryAttempt,
    Enforcement,
    OutboxMessage,
    StatementOfReasons,
    WebhookEndpoint,
)

logger = logging.getLogger(__name__)

State = OutboxMessage.State
OPEN_STATES = (State.PENDING, State.RETRYING)
JITTER = 0.10  # each scheduled delay is stretched or shrunk by up to 10 %
RUN_BUDGET_SECONDS = 60.0  # one run stops claiming after this, well inside the task's limits


def delivery_configured() -> bool:
    """Whether there is a receiver to deliver to (its URL and at least one secret)."""
    return bool(settings.ENFORCEMENT_WEBHOOK_URL and settings.ENFORCEMENT_WEBHOOK_SECRET)


def _secrets() -> tuple[webhooks.Secret, ...]:
    return webhooks.parse_secrets(settings.ENFORCEMENT_WEBHOOK_SECRET or "")


def _lease_seconds() -> float:
    return (
        settings.ENFORCEMENT_CONNECT_TIMEOUT_SECONDS + settings.ENFORCEMENT_READ_TIMEOUT_SECONDS
    ) * 2


_client: tuple[int, httpx2.Client] | None = None


def _http() -> httpx2.Client:
    """One keep-alive client per process (a new client costs a TLS context, tens of ms):
    made again after a fork, never shared across processes."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), httpx2.Client(follow_redirects=False))
    return _client[1]


def _endpoint() -> WebhookEndpoint:
    endpoint, _ = WebhookEndpoint.objects.get_or_create(url=settings.ENFORCEMENT_WEBHOOK_URL)
    return endpoint


# --- the body -------------------------------------------------------------------------------


def _enforcement_data(enforcement: Enforcement, *, first_attempt_at: datetime) -> dict:
    decision = enforcement.decision
    listing = enforcement.listing
    # A reversal (restore_listing after a correction to "no violation") concerns the policy of
    # the action it reverses.
    policy = decision.policy_id
    if policy is None and enforcement.reverses_id is not None:
        assert enforcement.reverses is not None
        policy = enforcement.reverses.decision.policy_id
    return {
        "enforcement_id": enforcement.id,
        "action": enforcement.action,
        "listing_id": listing.external_id,
        "seller_id": listing.seller.external_id,
        "policy": policy,
        "decision_id": decision.id,
        "decision_source": decision.source,
        "reverses": enforcement.reverses_id,
        "decided_at": decision.created_at.isoformat(),
        "trace_id": decision.trace_id,
        "appealable_until": (
            first_attempt_at + timedelta(days=settings.APPEAL_WINDOW_DAYS)
        ).isoformat(),
        "statement_of_reasons": _statement(decision),
    }


def _appeal_data(message: OutboxMessage) -> dict:
    """What the marketplace tells the seller: the outcome and the reviewer's reasoned answer
    (written by appeals staff), and which reversals it caused (sent before this message)."""
    appeal = Appeal.objects.select_related("enforcement__listing", "seller").get(
        pk=message.appeal_id
    )
    overturn = appeal.overturn_decision_id
    return {
        "appeal_id": appeal.appeal_id,
        "enforcement_id": appeal.enforcement_id,
        "outcome": appeal.outcome,
        "notes": appeal.notes,
        "decided_at": appeal.decided_at.isoformat() if appeal.decided_at else None,
        "decision_id": overturn,
        "reversals": sorted(
            Enforcement.objects.filter(decision_id=overturn).values_list("id", flat=True)
        )
        if overturn
        else [],
        "listing_id": appeal.enforcement.listing.external_id,
        "seller_id": appeal.seller.external_id,
        "trace_id": appeal.trace_id,
    }


def _statement(decision) -> dict | None:
    """The decision's statement of reasons as filed with the Transparency Database; a reversal's
    decision restricts nothing and has none."""
    row = StatementOfReasons.objects.filter(decision=decision).first()
    return row.statement if row else None


def message_body(message: OutboxMessage, *, now: datetime | None = None) -> dict:
    """The webhook body, built at the first attempt and stored; the stored one after that."""
    if message.body is not None:
        return message.body
    first_attempt_at = message.first_attempt_at or now or timezone.now()
    if message.type == OutboxMessage.Type.ENFORCEMENT_ACTION and message.enforcement_id:
        enforcement = Enforcement.objects.select_related(
            "decision", "listing__seller", "reverses__decision"
        ).get(pk=message.enforcement_id)
        data = _enforcement_data(enforcement, first_attempt_at=first_attempt_at)
    elif message.type == OutboxMessage.Type.APPEAL_RESOLVED and message.appeal_id:
        data = _appeal_data(message)
    else:
        raise ValueError(f"outbox message {message.pk} of type {message.type!r} has no body")
    body = {"type": message.type, "data": data}
    if len(_encode(body)) > webhooks.MAX_BODY_BYTES:
        raise ValueError(f"outbox message {message.pk}: body over {webhooks.MAX_BODY_BYTES} bytes")
    # Conditional: when two workers race on the first attempt, the first body written stays.
    OutboxMessage.objects.filter(pk=message.pk, body__isnull=True).update(
        body=body, first_attempt_at=first_attempt_at
    )
    message.refresh_from_db(fields=["body", "first_attempt_at"])
    assert message.body is not None
    return message.body


def _encode(body: dict) -> bytes:
    # PostgreSQL's jsonb does not keep key order; sorted keys make every retry the same bytes.
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# --- claiming -------------------------------------------------------------------------------


def _due(now: datetime) -> Q:
    return Q(state__in=OPEN_STATES, next_attempt_at__lte=now) | Q(
        state=State.SENDING, lease_until__lt=now
    )


def _earlier_undelivered(key: str) -> Exists:
    return Exists(
        OutboxMessage.objects.filter(**{key: OuterRef(key)}, id__lt=OuterRef("id")).exclude(
            state=State.DELIVERED
        )
    )


def messages_claim(
    *, limit: int, now: datetime, exclude_ids: Collection[int] = ()
) -> list[OutboxMessage]:
    """Claim up to `limit` due messages (oldest first) whose listing and seller have no earlier
    undelivered message; each comes back in state `sending` with this claim's lease."""
    lease_until = now + timedelta(seconds=_lease_seconds())
    # Two scans, each on its own partial index, instead of one OR that makes PostgreSQL walk
    # every delivered row from the oldest: stale claims of killed workers first (rare), then
    # due messages in id order. Order between messages is kept by the two NOT EXISTS checks.
    scans = [
        Q(state=State.SENDING, lease_until__lt=now),
        Q(state__in=OPEN_STATES, next_attempt_at__lte=now),
    ]
    claimed: list[OutboxMessage] = []
    with transaction.atomic():
        for scan in scans:
            if len(claimed) >= limit:
                break
            candidates = (
                OutboxMessage.objects.filter(scan)
                .exclude(id__in=[*exclude_ids, *(m.pk for m in claimed)])
                .filter(~_earlier_undelivered("listing_id"), ~_earlier_undelivered("seller_id"))
                .order_by("id")
            )
            if connection.features.has_select_for_update_skip_locked:
                candidates = candidates.select_for_update(skip_locked=True, of=("self",))
            for message in candidates[: limit - len(claimed)]:
                taken = (
                    OutboxMessage.objects.filter(_due(now), pk=message.pk).update(
                        state=State.SENDING, lease_until=lease_until
                    )
                    == 1
                )
                if taken:
                    message.state, message.lease_until = State.SENDING, lease_until
                    claimed.append(message)
    return claimed


def _mine(message: OutboxMessage):
    """The message, while this worker's claim on it still holds."""
    return OutboxMessage.objects.filter(
        pk=message.pk, state=State.SENDING, lease_until=message.lease_until
    )


def _give_back(message: OutboxMessage) -> None:
    state = State.PENDING if message.attempts == 0 else State.RETRYING
    if _mine(message).update(state=state, lease_until=None):
        message.state, message.lease_until = state, None


# --- sending --------------------------------------------------------------------------------


def retry_delay(
    attempts: int, retry_after: int | None, *, schedule: list[int] | tuple[int, ...] | None = None
) -> float | None:
    """Seconds until the next attempt after `attempts` attempts; None when the schedule
    (ENFORCEMENT_RETRY_SCHEDULE unless another is given) is exhausted. A receiver's
    Retry-After can only lengthen the wait."""
    if schedule is None:
        schedule = settings.ENFORCEMENT_RETRY_SCHEDULE
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts] * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, float(retry_after))
    return delay


def message_send(message: OutboxMessage) -> str:
    """One attempt at a claimed message. Returns what became of it: delivered, retrying,
    failed, disabled (a 410 turned the endpoint off), released (the endpoint is disabled: the
    claim is given back untouched) or lost (the lease ran out and another worker has it)."""
    listing_id, seller_id, enforced_case, appealed_case = (
        OutboxMessage.objects.filter(pk=message.pk)
        .values_list(
            "listing__external_id",
            "seller__external_id",
            "enforcement__decision__case_id",
            "appeal__case_id",
        )
        .get()
    )
    with trace(
        message.trace_id or None,
        listing_id=listing_id,
        seller_id=seller_id,
        case_id=enforced_case or appealed_case,
    ):
        outcome = _message_send(message)
        logger.info("outbox message %s (%s): %s", message.pk, message.type, outcome)
        return outcome


def _message_send(message: OutboxMessage) -> str:
    secrets = _secrets()
    endpoint = _endpoint()
    if not endpoint.enabled:
        _give_back(message)
        return "released"
    body = _encode(message_body(message))
    number = (
        DeliveryAttempt.objects.filter(message=message).aggregate(n=Max("number"))["n"] or 0
    ) + 1
    started_at = timezone.now()
    result = webhooks.deliver(
        url=endpoint.url,
        secrets=secrets,
        webhook_id=message.webhook_id,
        body=body,
        connect_timeout=settings.ENFORCEMENT_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.ENFORCEMENT_READ_TIMEOUT_SECONDS,
        client=_http(),
    )
    finished_at = started_at + timedelta(milliseconds=result.duration_ms)
    attempts = message.attempts + 1
    common = {
        "attempts": attempts,
        "lease_until": None,
        "last_status": result.status_code,
        "last_error": result.error or "",
    }
    if result.delivered:
        outcome, changes = "delivered", {"state": State.DELIVERED, "delivered_at": finished_at}
    elif result.gone:
        # The attempt counts; the message waits, as it was, for the endpoint to be enabled.
        outcome, changes = "disabled", {"state": State.PENDING, "next_attempt_at": finished_at}
    else:
        delay = retry_delay(attempts, result.retry_after_seconds)
        if delay is None:
            outcome, changes = "failed", {"state": State.FAILED}
        else:
            outcome = "retrying"
            changes = {
                "state": State.RETRYING,
                "next_attempt_at": finished_at + timedelta(seconds=delay),
            }
    with transaction.atomic():
        if _mine(message).update(**common, **changes) != 1:
            logger.warning(
                "outbox message %s: the lease ran out during the attempt; another worker has it",
                message.pk,
            )
            return "lost"
        DeliveryAttempt.objects.create(
            message=message,
            number=number,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error or "",
            outcome={"retrying": "retry"}.get(outcome, outcome),
        )
        if result.gone:
            _endpoint_disable(endpoint, message=message, now=finished_at)
    if metrics.ENABLED:
        delivery_record(message=message, outcome=outcome, finished_at=finished_at)
    for key, value in {**common, **changes}.items():
        setattr(message, key, value)
    if outcome == "failed":
        with trace(message.trace_id or None):
            logger.error(
                "outbox message %s (%s) failed after %s attempts: %s",
                message.pk,
                message.webhook_id,
                attempts,
                result.error,
            )
    return outcome


def _endpoint_disable(endpoint: WebhookEndpoint, *, message: OutboxMessage, now: datetime) -> None:
    reason = f"HTTP 410 Gone answering {message.webhook_id}"
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
        enabled=False, disabled_at=now, disabled_reason=reason, updated_at=now
    ):
        return  # another worker disabled it first
    audit_record(
        action=AuditAction.ENDPOINT_DISABLED,
        obj=endpoint,
        label=SYSTEM,
        trace_id=message.trace_id,
        data={"url": endpoint.url, "reason": reason, "message_id": message.pk},
    )
    logger.warning(
        "webhook endpoint %s disabled (%s); nothing is sent until it is enabled again",
        endpoint.url,
        reason,
    )


def endpoint_enable(*, actor=None) -> bool:
    """Enable the configured endpoint again after a 410; True when it was disabled."""
    if not settings.ENFORCEMENT_WEBHOOK_URL:
        return False
    now = timezone.now()
    endpoint = _endpoint()
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=False).update(
        enabled=True, disabled_at=None, disabled_reason="", updated_at=now
    ):
        return False
    audit_record(
        action=AuditAction.ENDPOINT_ENABLED,
        obj=endpoint,
        actor=actor,
        data={"url": endpoint.url, "was": endpoint.disabled_reason},
    )
    return True


# --- the periodic run and redelivery --------------------------------------------------------


def deliveries_run(*, limit: int = 100) -> dict:
    """Send due messages, one claim at a time (so no lease waits on other sends), until `limit`
    attempts, nothing due, or the run's time budget is spent. Counts by outcome."""
    if not delivery_configured():
        return {"configured": False}
    _secrets()  # a bad secret fails loudly here, before anything is claimed
    counts: Counter[str] = Counter()
    if not _endpoint().enabled:
        return {"configured": True, "endpoint_enabled": False}
    seen: set[int] = set()
    deadline = time.monotonic() + RUN_BUDGET_SECONDS
    while len(seen) < limit and time.monotonic() < deadline:
        batch = messages_claim(limit=1, now=timezone.now(), exclude_ids=seen)
        if not batch:
            break
        (message,) = batch
        seen.add(message.pk)
        outcome = message_send(message)
        counts[outcome] += 1
        if outcome == "released":
            break  # the endpoint is disabled
    return {"configured": True, "endpoint_enabled": _endpoint().enabled, **counts}


def messages_redeliver(*, ids: Iterable[int] | None = None, failed: bool = False) -> int:
    """Send messages again from the start of the schedule, with the same webhook id and body:
    the given ids (any state but one being sent now) and/or every failed message."""
    ids = list(ids or [])
    if not ids and not failed:
        raise ValueError("name the messages to send again (ids) or ask for the failed ones")
    now = timezone.now()
    wanted = Q(id__in=ids) | (Q(state=State.FAILED) if failed else Q(pk__in=[]))
    rows = OutboxMessage.objects.filter(wanted).exclude(state=State.SENDING, lease_until__gte=now)
    count = rows.update(state=State.PENDING, attempts=0, next_attempt_at=now, lease_until=None)
    logger.info("%s outbox messages queued to be sent again", count)
    return count


@shared_task(name="reviews.deliver_enforcements_task", soft_time_limit=110, time_limit=150)
def deliver_enforcements_task() -> dict:
    """Periodic (beat): deliver what is due. Safe to run several at once: messages are claimed."""
    return deliveries_run()
