"""The operators' page and API for enforcement delivery and statement filing (policy admins)."""

import base64

import pytest
from django.utils import timezone

from moderation_portal.core.models import AuditEvent
from reviews.decisions.models import Decision
from reviews.enforcement.models import (
    DeliveryAttempt,
    OutboxMessage,
    StatementOfReasons,
    WebhookEndpoint,
)
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
URL = "http://127.0.0.1:9/hooks/enforcement"


def removal(**kw) -> OutboxMessage:
    """The removal's message (a seller's first strike also sends a warn_seller beside it)."""
    (case,) = open_cases(0.97, **kw)
    return OutboxMessage.objects.get(
        enforcement__decision=Decision.objects.get(case=case), enforcement__action="remove_listing"
    )


@pytest.fixture
def configured(settings):
    settings.ENFORCEMENT_WEBHOOK_URL = URL
    settings.ENFORCEMENT_WEBHOOK_SECRET = SECRET


@pytest.mark.django_db
def test_the_page_and_api_say_when_delivery_is_not_configured(policy_admin, client):
    removal()
    client.force_login(policy_admin)
    page = client.get("/enforcement/").content.decode()
    assert "enforcement delivery not configured" in page
    assert "Transparency Database submission not configured" in page
    status = api_client_for(policy_admin).get("/api/v1/enforcement/").json()
    assert status["delivery"]["configured"] is False
    assert status["delivery"]["status"] == "enforcement delivery not configured"
    assert status["delivery"]["counts"]["pending"] == 2  # the removal and the first warning
    assert status["statements"]["status"] == "Transparency Database submission not configured"
    assert status["statements"]["counts"]["pending"] == 1  # one decision, one statement
    assert sorted(m["action"] for m in status["messages"]) == ["remove_listing", "warn_seller"]


@pytest.mark.django_db
def test_failed_actions_show_their_attempts_and_are_sent_again_with_the_same_id(
    configured, policy_admin, client
):
    message = removal(seller="seller-failed")
    now = timezone.now()
    OutboxMessage.objects.filter(pk=message.pk).update(
        state="failed", attempts=1, last_status=503, last_error="HTTP 503", first_attempt_at=now
    )
    DeliveryAttempt.objects.create(
        message=message, number=1, started_at=now, duration_ms=12, status_code=503,
        error="HTTP 503", outcome="failed",
    )  # fmt: skip
    client.force_login(policy_admin)
    page = client.get("/enforcement/?state=failed").content.decode()
    assert message.webhook_id in page
    assert "HTTP 503" in page
    assert "1 attempts" in page
    assert "seller-failed" in page

    response = client.post("/enforcement/redeliver/", {"ids": [message.pk]})
    assert response.status_code == 302
    webhook_id = message.webhook_id
    message.refresh_from_db()
    assert (message.state, message.attempts, message.webhook_id) == ("pending", 0, webhook_id)
    audit = AuditEvent.objects.get(action="enforcement_redelivered")
    assert audit.actor == policy_admin
    assert audit.data["queued"] == 1


@pytest.mark.django_db
def test_the_api_redelivers_every_failed_action(configured, policy_admin):
    first, second = removal(seller="s-api-1"), removal(seller="s-api-2")
    OutboxMessage.objects.filter(pk__in=[first.pk, second.pk]).update(state="failed", attempts=10)
    api = api_client_for(policy_admin)
    assert api.post("/api/v1/enforcement/redeliver/", {}, format="json").status_code == 400
    response = api.post("/api/v1/enforcement/redeliver/", {"failed": True}, format="json")
    assert response.json() == {"queued": 2}
    assert set(OutboxMessage.objects.values_list("state", flat=True)) == {"pending"}


@pytest.mark.django_db
def test_a_disabled_receiver_alerts_policy_admins_on_every_page(
    configured, policy_admin, moderator, client
):
    removal()
    WebhookEndpoint.objects.create(
        url=URL, enabled=False, disabled_at=timezone.now(), disabled_reason="HTTP 410 Gone"
    )
    client.force_login(moderator)
    assert 'id="endpoint-alert"' not in client.get("/queues/").content.decode()
    client.force_login(policy_admin)
    assert 'id="endpoint-alert"' in client.get("/ladder/").content.decode()
    page = client.get("/enforcement/").content.decode()
    assert "disabled" in page
    assert "HTTP 410 Gone" in page

    assert client.post("/enforcement/endpoint/enable/").status_code == 302
    assert WebhookEndpoint.objects.get(url=URL).enabled
    assert AuditEvent.objects.filter(action="webhook_endpoint_enabled", actor=policy_admin).exists()
    assert 'id="endpoint-alert"' not in client.get("/ladder/").content.decode()


@pytest.mark.django_db
def test_rejected_statements_show_their_errors_and_are_submitted_again(policy_admin, client):
    message = removal()
    row = StatementOfReasons.objects.get(decision=message.enforcement.decision)
    StatementOfReasons.objects.filter(pk=row.pk).update(
        statement={**row.statement, "category": "STATEMENT_CATEGORY_MADE_UP"},
        state="rejected",
        attempts=1,
        errors={"category": ["The selected category is invalid."]},
        last_error="rejected by the Transparency Database's validation",
    )
    client.force_login(policy_admin)
    page = client.get("/enforcement/?statements=rejected").content.decode()
    assert row.puid in page
    assert "The selected category is invalid." in page
    assert client.post("/enforcement/statements/resubmit/", {"rejected": "1"}).status_code == 302
    row.refresh_from_db()
    assert (row.state, row.attempts, row.errors) == ("pending", 0, {})
    # Written again under the active ladder's mapping, not sent again as it was refused.
    assert row.statement["category"] == "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS"
    assert AuditEvent.objects.filter(action="statements_resubmitted").count() == 1


@pytest.mark.django_db
def test_bad_ids_are_refused_and_nothing_changes(configured, policy_admin, client):
    message = removal()
    OutboxMessage.objects.filter(pk=message.pk).update(state="failed", attempts=3)
    client.force_login(policy_admin)
    response = client.post("/enforcement/redeliver/", {"ids": ["1; DROP TABLE"]}, follow=True)
    assert "Those message ids are not valid." in response.content.decode()
    message.refresh_from_db()
    assert (message.state, message.attempts) == ("failed", 3)
    assert not AuditEvent.objects.filter(action="enforcement_redelivered").exists()
