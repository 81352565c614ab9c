"""Delivering the enforcement outbox to a real receiver on 127.0.0.1, through the Celery task.

The receiver verifies every request with the independent ``standardwebhooks`` package and
answers from a script (status and headers per request), so retries, Retry-After, 410 Gone and an
exhausted schedule are the receiver's real answers over a socket.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from moderation_portal.core.models import AuditEvent
from reviews.decisions.services import DecisionSpec, decision_record
from reviews.enforcement.delivery import (
    deliver_enforcements_task,
    endpoint_enable,
    message_send,
    messages_claim,
)
from reviews.models import Decision, DeliveryAttempt, Enforcement, OutboxMessage, WebhookEndpoint
from reviews.policies.services import ladder_active
from tests.reviews.helpers import open_cases, receiver_serving

SECRET = "whsec_" + base64.b64encode(bytes(range(40, 72))).decode()


@pytest.fixture
def receiver(settings):
    with receiver_serving(SECRET, "/hooks/enforcement") as state:
        settings.ENFORCEMENT_WEBHOOK_URL = state.url
        settings.ENFORCEMENT_WEBHOOK_SECRET = SECRET
        settings.ENFORCEMENT_CONNECT_TIMEOUT_SECONDS = 2.0
        settings.ENFORCEMENT_READ_TIMEOUT_SECONDS = 2.0
        yield state


def run() -> dict:
    """One periodic run, through the Celery task."""
    return deliver_enforcements_task.apply().get()


IDLE = {"configured": True, "endpoint_enabled": True}


def attempts_of(message: OutboxMessage) -> list[tuple]:
    return list(
        DeliveryAttempt.objects.filter(message=message)
        .order_by("number")
        .values_list("number", "status_code", "outcome", "error")
    )


def finished(message: OutboxMessage, number: int):
    attempt = DeliveryAttempt.objects.get(message=message, number=number)
    return attempt.started_at + timedelta(milliseconds=attempt.duration_ms)


def removal(**kw) -> OutboxMessage:
    """An automatic removal's remove_listing message. Each call here is the seller's first
    strike, so the decision also warns the seller: its warn_seller message comes right after
    (see `warning_of`)."""
    (case,) = open_cases(0.97, **kw)
    decision = Decision.objects.get(case=case)
    assert (decision.source, decision.action) == ("automatic", "remove")
    assert sorted(
        OutboxMessage.objects.filter(enforcement__decision=decision).values_list(
            "enforcement__action", flat=True
        )
    ) == ["remove_listing", "warn_seller"]
    return OutboxMessage.objects.get(
        enforcement__decision=decision, enforcement__action="remove_listing"
    )


def warning_of(message: OutboxMessage) -> OutboxMessage:
    """The warn_seller message the first strike added beside `message`'s removal."""
    warning = OutboxMessage.objects.get(
        enforcement__decision_id=message.enforcement.decision_id,
        enforcement__action="warn_seller",
    )
    assert warning.pk > message.pk  # sent after the removal: the seller's actions keep order
    return warning


@pytest.mark.django_db
def test_a_removal_arrives_once_signed_with_the_exact_body(receiver):
    message = removal(seller="seller-exact")
    warning = warning_of(message)
    enforcement = Enforcement.objects.get(message=message)
    decision = enforcement.decision

    assert run() == {**IDLE, "delivered": 2}
    assert run() == IDLE

    assert len(receiver.requests) == 2
    request, warned = receiver.requests
    assert request.verified is True
    assert request.headers["webhook-id"] == message.webhook_id
    message.refresh_from_db()
    assert message.first_attempt_at is not None
    expected = {
        "type": "enforcement.action",
        "data": {
            "enforcement_id": enforcement.id,
            "action": "remove_listing",
            "listing_id": enforcement.listing.external_id,
            "seller_id": "seller-exact",
            "policy": "firearms",
            "decision_id": decision.id,
            "decision_source": "automatic",
            "reverses": None,
            "decided_at": decision.created_at.isoformat(),
            "trace_id": decision.case.trace_id,
            "appealable_until": (message.first_attempt_at + timedelta(days=184)).isoformat(),
            "statement_of_reasons": decision.statement_of_reasons.statement,
        },
    }
    assert json.loads(request.body) == expected
    assert message.body == expected
    assert len(request.body) < 20_000
    assert enforcement.listing.external_id.startswith("listing-")
    assert decision.case.trace_id.startswith("trace-")
    assert (message.state, message.attempts, message.last_status, message.lease_until) == (
        "delivered",
        1,
        204,
        None,
    )
    assert message.delivered_at == finished(message, 1)
    assert attempts_of(message) == [(1, 204, "delivered", "")]
    attempt = DeliveryAttempt.objects.get(message=message)
    assert message.first_attempt_at <= attempt.started_at

    # The first strike's warning: the same decision and statement, its own enforcement and id.
    warning.refresh_from_db()
    assert warned.verified is True
    assert warned.headers["webhook-id"] == warning.webhook_id != message.webhook_id
    assert json.loads(warned.body) == warning.body
    assert warning.body["data"] == {
        **expected["data"],
        "enforcement_id": warning.enforcement_id,
        "action": "warn_seller",
        "appealable_until": (warning.first_attempt_at + timedelta(days=184)).isoformat(),
    }
    assert (warning.state, warning.attempts, warning.last_status) == ("delivered", 1, 204)


@pytest.mark.django_db
def test_a_503_then_200_is_one_message_with_one_webhook_id(receiver, settings):
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 0, 0)
    receiver.script = [(503, {})]
    receiver.status = 200
    message = removal()

    warning = warning_of(message)

    assert run() == {**IDLE, "retrying": 1}  # the warning waits for the removal before it
    message.refresh_from_db()
    assert (message.state, message.attempts, message.last_status, message.last_error) == (
        "retrying",
        1,
        503,
        "HTTP 503",
    )
    assert message.next_attempt_at == finished(message, 1)  # schedule[1] = 0 s: no jitter
    warning.refresh_from_db()
    assert (warning.state, warning.attempts) == ("pending", 0)

    assert run() == {**IDLE, "delivered": 2}
    message.refresh_from_db()
    assert (message.state, message.attempts, message.last_status) == ("delivered", 2, 200)
    assert OutboxMessage.objects.count() == 2
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        message.webhook_id,
        message.webhook_id,
        warning.webhook_id,
    ]
    assert [r.verified for r in receiver.requests] == [True, True, True]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert attempts_of(message) == [(1, 503, "retry", "HTTP 503"), (2, 200, "delivered", "")]
    assert attempts_of(warning) == [(1, 200, "delivered", "")]


@pytest.mark.django_db
def test_retry_after_is_honoured_when_later_than_the_schedule(receiver, settings):
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 5, 300)
    receiver.script = [(503, {"Retry-After": "3600"})]
    message = removal()

    assert run() == {**IDLE, "retrying": 1}
    message.refresh_from_db()
    assert message.state == "retrying"
    assert message.next_attempt_at == finished(message, 1) + timedelta(seconds=3600)
    assert run() == IDLE  # not due yet
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_the_schedule_wins_over_a_shorter_retry_after_with_jitter(receiver, settings):
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 300)
    receiver.script = [(429, {"Retry-After": "1"})]
    message = removal()

    assert run() == {**IDLE, "retrying": 1}
    message.refresh_from_db()
    delay = (message.next_attempt_at - finished(message, 1)).total_seconds()
    assert 270 <= delay <= 330
    assert (message.last_status, message.last_error) == (429, "HTTP 429")


@pytest.mark.django_db
def test_410_disables_the_endpoint_and_nothing_is_sent_until_it_is_enabled(receiver):
    first = removal(seller="seller-gone-a")
    second = removal(seller="seller-gone-b")
    receiver.script = [(410, {})]

    assert run() == {"configured": True, "endpoint_enabled": False, "disabled": 1, "released": 1}
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.url, endpoint.enabled, endpoint.disabled_reason) == (
        receiver.url,
        False,
        f"HTTP 410 Gone answering {first.webhook_id}",
    )
    assert endpoint.disabled_at == finished(first, 1)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.attempts, first.last_status, first.lease_until) == (
        "pending",
        1,
        410,
        None,
    )
    assert (second.state, second.attempts, second.body, second.lease_until) == (
        "pending",
        0,
        None,
        None,
    )
    assert attempts_of(first) == [(1, 410, "disabled", "HTTP 410")]
    assert attempts_of(second) == []
    audit = AuditEvent.objects.get(action="webhook_endpoint_disabled")
    assert (audit.object_type, audit.object_id, audit.actor_label, audit.data) == (
        "webhookendpoint",
        str(endpoint.pk),
        "system",
        {"url": receiver.url, "reason": endpoint.disabled_reason, "message_id": first.pk},
    )

    assert run() == {"configured": True, "endpoint_enabled": False}
    assert len(receiver.requests) == 1

    assert endpoint_enable() is True
    assert AuditEvent.objects.filter(action="webhook_endpoint_enabled").count() == 1
    assert run() == {**IDLE, "delivered": 4}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        first.webhook_id,
        first.webhook_id,
        warning_of(first).webhook_id,
        second.webhook_id,
        warning_of(second).webhook_id,
    ]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert attempts_of(first) == [(1, 410, "disabled", "HTTP 410"), (2, 204, "delivered", "")]


@pytest.mark.django_db
def test_an_exhausted_schedule_fails_and_redeliver_sends_it_again(receiver, settings):
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 0)
    receiver.status = 500
    message = removal()
    warning = warning_of(message)

    assert run() == {**IDLE, "retrying": 1}
    assert run() == {**IDLE, "failed": 1}
    assert run() == IDLE  # the warning waits behind the failed removal
    warning.refresh_from_db()
    assert (warning.state, warning.attempts) == ("pending", 0)
    message.refresh_from_db()
    assert (message.state, message.attempts, message.last_status, message.last_error) == (
        "failed",
        2,
        500,
        "HTTP 500",
    )

    out = StringIO()
    call_command("redeliver_enforcements", "--failed", stdout=out)
    assert out.getvalue() == "1 enforcement messages queued to be sent again\n"
    message.refresh_from_db()
    assert (message.state, message.attempts, message.lease_until) == ("pending", 0, None)

    receiver.status = 200
    assert run() == {**IDLE, "delivered": 2}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [message.webhook_id] * 3 + [
        warning.webhook_id
    ]
    assert len({r.body for r in receiver.requests[:3]}) == 1
    assert attempts_of(message) == [
        (1, 500, "retry", "HTTP 500"),
        (2, 500, "failed", "HTTP 500"),
        (3, 200, "delivered", ""),
    ]


@pytest.mark.django_db
def test_redeliver_by_id_sends_a_delivered_message_again(receiver):
    message = removal()
    other = removal(seller="seller-other")
    assert run() == {**IDLE, "delivered": 4}

    out = StringIO()
    call_command("redeliver_enforcements", "--id", str(message.pk), stdout=out)
    assert out.getvalue() == "1 enforcement messages queued to be sent again\n"
    assert run() == {**IDLE, "delivered": 1}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        message.webhook_id,
        warning_of(message).webhook_id,
        other.webhook_id,
        warning_of(other).webhook_id,
        message.webhook_id,
    ]


@pytest.mark.django_db
def test_a_restore_waits_until_the_removal_it_reverses_is_delivered(receiver, settings, qa_lead):
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 0, 0)
    receiver.script = [(503, {})]
    removed = removal()
    original = removed.enforcement.decision
    correction = decision_record(
        case=original.case,
        source="qa_correction",
        user=qa_lead,
        supersedes=original,
        ladder=ladder_active(),
        spec=DecisionSpec(verdict="no_violation", policy=None, action="none", notes="a replica"),
    )
    warning = warning_of(removed)
    restore, withdraw = OutboxMessage.objects.filter(enforcement__decision=correction).order_by(
        "id"
    )
    assert restore.enforcement.action == "restore_listing"
    assert withdraw.enforcement.action == "withdraw_warning"
    assert withdraw.pk > restore.pk > warning.pk > removed.pk

    assert run() == {**IDLE, "retrying": 1}  # the removal; the rest is not claimed
    for waiting in (warning, restore, withdraw):
        waiting.refresh_from_db()
        assert (waiting.state, waiting.attempts, waiting.body) == ("pending", 0, None)
    claimed = messages_claim(limit=10, now=timezone.now())
    assert [m.pk for m in claimed] == [removed.pk]
    assert message_send(claimed[0]) == "delivered"

    assert run() == {**IDLE, "delivered": 3}
    assert [r.data["action"] for r in receiver.requests] == [
        "remove_listing",
        "remove_listing",
        "warn_seller",
        "restore_listing",
        "withdraw_warning",
    ]
    data = receiver.requests[3].data
    assert (data["reverses"], data["decision_id"], data["decision_source"], data["policy"]) == (
        removed.enforcement_id,
        correction.id,
        "qa_correction",
        "firearms",
    )
    data = receiver.requests[4].data
    assert (data["reverses"], data["decision_id"], data["decision_source"], data["policy"]) == (
        warning.enforcement_id,
        correction.id,
        "qa_correction",
        "firearms",
    )


@pytest.mark.django_db
def test_a_killed_workers_stale_claim_is_taken_again_with_the_same_webhook_id(receiver):
    stale = removal(seller="seller-stale")
    live = removal(seller="seller-live")
    now = timezone.now()
    assert [m.pk for m in messages_claim(limit=2, now=now)] == [stale.pk, live.pk]
    OutboxMessage.objects.filter(pk=stale.pk).update(lease_until=now - timedelta(seconds=1))

    # The stale removal, then its warning (free once the removal is delivered); the live claim
    # and the live seller's warning behind it are left alone.
    assert run() == {**IDLE, "delivered": 2}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        stale.webhook_id,
        warning_of(stale).webhook_id,
    ]
    stale.refresh_from_db()
    live.refresh_from_db()
    assert (stale.state, stale.attempts) == ("delivered", 1)
    assert (live.state, live.attempts, live.lease_until) == (
        "sending",
        0,
        now + timedelta(seconds=8),
    )
    assert warning_of(live).state == "pending"


@pytest.mark.django_db
def test_without_a_url_nothing_is_sent_and_messages_stay_pending(receiver, settings):
    settings.ENFORCEMENT_WEBHOOK_URL = None
    message = removal()

    assert run() == {"configured": False}
    message.refresh_from_db()
    assert (message.state, message.attempts, message.body, message.first_attempt_at) == (
        "pending",
        0,
        None,
        None,
    )
    assert receiver.requests == []
    assert DeliveryAttempt.objects.count() == 0
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_workers_claiming_at_once_never_take_the_same_message():
    messages = [removal(seller=f"seller-race-{i}") for i in range(6)]
    barrier = threading.Barrier(3)
    taken: list[list[int]] = []

    def worker():
        try:
            barrier.wait(5)
            taken.append([m.pk for m in messages_claim(limit=6, now=timezone.now())])
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    claimed = [pk for batch in taken for pk in batch]
    assert len(taken) == 3
    # The removals only: each seller's warning waits until its removal is delivered.
    assert sorted(claimed) == sorted(m.pk for m in messages)
    assert OutboxMessage.objects.filter(state="sending").count() == 6
    assert OutboxMessage.objects.filter(state="pending").count() == 6


def test_a_bad_retry_schedule_fails_loudly():
    env = {**os.environ, "ENFORCEMENT_RETRY_SCHEDULE": "0,5,soon"}
    done = subprocess.run(
        [sys.executable, "-c", "import moderation_portal.settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "ENFORCEMENT_RETRY_SCHEDULE='0,5,soon' is not comma-separated seconds" in done.stderr
