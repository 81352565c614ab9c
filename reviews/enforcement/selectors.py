"""Reads for the operators' page and API: where enforcement delivery and statement filing stand."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Min, Prefetch
from django.utils import timezone

from reviews.enforcement.delivery import delivery_configured
from reviews.enforcement.models import (
    DeliveryAttempt,
    OutboxMessage,
    StatementOfReasons,
    WebhookEndpoint,
)
from reviews.enforcement.transparency import submission_configured

NOT_CONFIGURED = "enforcement delivery not configured"
TDB_NOT_CONFIGURED = "Transparency Database submission not configured"
MESSAGE_STATES = [s for s, _ in OutboxMessage.State.choices]
STATEMENT_STATES = [s for s, _ in StatementOfReasons.State.choices]
PAGE_ROWS = 100


def delivery_status() -> dict:
    """Configuration, endpoint state, counts by state, backlog age: the page's and API's head."""
    now = timezone.now()
    counts = dict(
        OutboxMessage.objects.values_list("state").annotate(n=Count("id")).order_by("state")
    )
    oldest = OutboxMessage.objects.exclude(
        state__in=[OutboxMessage.State.DELIVERED, OutboxMessage.State.FAILED]
    ).aggregate(t=Min("created_at"))["t"]
    endpoint = (
        WebhookEndpoint.objects.filter(url=settings.ENFORCEMENT_WEBHOOK_URL).first()
        if settings.ENFORCEMENT_WEBHOOK_URL
        else None
    )
    statements = dict(
        StatementOfReasons.objects.values_list("state").annotate(n=Count("id")).order_by("state")
    )
    configured = delivery_configured()
    tdb_configured = submission_configured()
    return {
        "delivery": {
            "configured": configured,
            "status": "configured" if configured else NOT_CONFIGURED,
            "url": settings.ENFORCEMENT_WEBHOOK_URL if configured else None,
            "endpoint": {
                "enabled": endpoint.enabled if endpoint else configured,
                "disabled_at": endpoint.disabled_at.isoformat()
                if endpoint and endpoint.disabled_at
                else None,
                "disabled_reason": endpoint.disabled_reason if endpoint else "",
            },
            "counts": {state: counts.get(state, 0) for state in MESSAGE_STATES},
            "oldest_undelivered_seconds": round((now - oldest).total_seconds()) if oldest else None,
        },
        "statements": {
            "configured": tdb_configured,
            "status": "configured" if tdb_configured else TDB_NOT_CONFIGURED,
            "url": settings.DSA_TDB_URL if tdb_configured else None,
            "counts": {state: statements.get(state, 0) for state in STATEMENT_STATES},
        },
    }


def messages_list(*, state: str | None, limit: int = PAGE_ROWS) -> list[OutboxMessage]:
    rows = OutboxMessage.objects.select_related(
        "enforcement__decision", "listing", "seller"
    ).prefetch_related(
        Prefetch("delivery_attempts", queryset=DeliveryAttempt.objects.order_by("number"))
    )
    rows = rows.filter(state=state) if state else rows.exclude(state=OutboxMessage.State.DELIVERED)
    return list(rows.order_by("-id")[:limit])


def statements_list(*, state: str | None, limit: int = PAGE_ROWS) -> list[StatementOfReasons]:
    rows = StatementOfReasons.objects.select_related("decision", "ladder_version")
    if state:
        rows = rows.filter(state=state)
    else:
        rows = rows.exclude(state=StatementOfReasons.State.SUBMITTED)
    return list(rows.order_by("-id")[:limit])


def endpoint_disabled() -> WebhookEndpoint | None:
    """The configured receiver when a 410 has disabled it (the alert every admin page shows)."""
    if not settings.ENFORCEMENT_WEBHOOK_URL:
        return None
    return WebhookEndpoint.objects.filter(
        url=settings.ENFORCEMENT_WEBHOOK_URL, enabled=False
    ).first()


def message_summary(message: OutboxMessage) -> dict:
    enforcement = message.enforcement
    return {
        "message_id": message.pk,
        "webhook_id": message.webhook_id,
        "type": message.type,
        "state": message.state,
        "enforcement_id": enforcement.pk if enforcement else None,
        "action": enforcement.action if enforcement else None,
        "listing_id": message.listing.external_id,
        "seller_id": message.seller.external_id,
        "decision_id": enforcement.decision_id if enforcement else None,
        "decision_source": enforcement.decision.source if enforcement else None,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at.isoformat()
        if message.state in ("pending", "retrying")
        else None,
        "last_status": message.last_status,
        "last_error": message.last_error or None,
        "created_at": message.created_at.isoformat(),
        "delivered_at": message.delivered_at.isoformat() if message.delivered_at else None,
    }
