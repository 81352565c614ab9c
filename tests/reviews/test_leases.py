from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from moderation_portal.core.models import AuditEvent
from reviews.models import Case, CaseSkip
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases


@pytest.mark.django_db
def test_heartbeat_extends_a_live_claim_only(moderator, moderator2):
    (case,) = open_cases(0.6)
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    Case.objects.filter(id=case.id).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    response = client.post(f"/api/v1/cases/{case.id}/heartbeat/")
    assert response.status_code == 200
    case.refresh_from_db()
    assert case.lease_expires_at > timezone.now() + timedelta(seconds=200)
    assert api_client_for(moderator2).post(f"/api/v1/cases/{case.id}/heartbeat/").status_code == 409
    Case.objects.filter(id=case.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert client.post(f"/api/v1/cases/{case.id}/heartbeat/").status_code == 409


@pytest.mark.django_db
def test_skip_needs_a_reason_returns_the_case_and_is_not_offered_again(moderator, moderator2):
    first, second = open_cases(0.69, 0.6)
    client = api_client_for(moderator)
    assert client.post("/api/v1/cases/claim-next/").json()["id"] == first.id
    assert (
        client.post(f"/api/v1/cases/{first.id}/skip/", {"reason": ""}, format="json").status_code
        == 400
    )
    assert (
        client.post(
            f"/api/v1/cases/{first.id}/skip/",
            {"reason": "need a Portuguese speaker"},
            format="json",
        ).status_code
        == 200
    )
    assert Case.objects.get(id=first.id).state == "queued"
    assert CaseSkip.objects.get(case=first, user=moderator).reason == "need a Portuguese speaker"
    assert AuditEvent.objects.get(action="case_skipped").data == {
        "reason": "need a Portuguese speaker"
    }
    # the skipper gets the next case; a colleague gets the skipped one
    assert client.post("/api/v1/cases/claim-next/").json()["id"] == second.id
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"] == first.id


@pytest.mark.django_db
def test_escalate_moves_the_case_to_the_senior_queue(moderator, moderator2):
    (case,) = open_cases(0.6)
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    assert (
        client.post(
            f"/api/v1/cases/{case.id}/escalate/",
            {"reason": "possible trafficking ring"},
            format="json",
        ).status_code
        == 200
    )
    case.refresh_from_db()
    assert (case.state, case.queue_kind) == ("queued", "escalation")
    # not in the ordinary queues any more, and only senior moderators may work the escalations
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").status_code == 204
    assert (
        api_client_for(moderator2)
        .post("/api/v1/cases/claim-next/", {"queue": "escalations"}, format="json")
        .status_code
        == 404
    )
    moderator2.groups.add(Group.objects.get(name="senior_moderator"))
    moderator2 = type(moderator2).objects.get(id=moderator2.id)
    claimed = api_client_for(moderator2).post(
        "/api/v1/cases/claim-next/", {"queue": "escalations"}, format="json"
    )
    assert claimed.status_code == 200
    assert claimed.json()["id"] == case.id
    senior = api_client_for(moderator2)
    url = f"/api/v1/cases/{case.id}/decision/"
    refused = senior.post(
        url, {"verdict": "violation", "policy": "firearms", "action": "suspend"}, format="json"
    )
    # the seller was never warned: a suspension is refused, and the case stays theirs
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "no_prior_warning"
    response = senior.post(
        url, {"verdict": "violation", "policy": "firearms", "action": "warn"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["action"] == "warn"


@pytest.mark.django_db
def test_very_high_scores_remove_automatically_and_send_the_account_to_a_human(moderator):
    (case,) = open_cases(0.995)
    assert (case.route, case.state, case.queue_kind, case.suspension_review) == (
        "auto_action",
        "queued",
        "escalation",
        True,
    )
    assert case.decisions.get().action == "remove"
    assert "a human reviews the account" in case.route_reason
