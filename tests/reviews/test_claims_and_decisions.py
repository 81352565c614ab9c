from datetime import timedelta

import pytest
from django.utils import timezone

from moderation_portal.core.models import AppendOnlyError, AuditEvent
from reviews.cases import claims
from reviews.models import Case, Decision, Enforcement
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases


@pytest.mark.django_db
def test_claim_next_gives_the_highest_priority_case_under_a_lease(moderator):
    _low, _high, trafficking = open_cases(0.55, 0.69) + open_cases(0.6, policy="human_trafficking")
    client = api_client_for(moderator)
    response = client.post("/api/v1/cases/claim-next/", {}, format="json")
    assert response.status_code == 200
    body = response.json()
    # human trafficking: severity 5 with a 1-hour SLA comes before firearms' 4 hours
    assert body["id"] == trafficking.id
    assert body["state"] == "claimed"
    assert body["claim"]["claimed_by"] == moderator.username
    trafficking.refresh_from_db()
    assert trafficking.lease_expires_at > timezone.now() + timedelta(seconds=200)
    # the same moderator asking again gets the case they hold, not a second one
    assert (
        client.post("/api/v1/cases/claim-next/", {}, format="json").json()["id"] == trafficking.id
    )
    assert (
        AuditEvent.objects.filter(action="case_claimed", object_id=str(trafficking.id)).count() == 1
    )


@pytest.mark.django_db
def test_higher_score_first_within_a_policy_and_queue_filters(moderator):
    _a, b = open_cases(0.55, 0.69)
    drugs = open_cases(0.9, policy="drugs")[0]
    client = api_client_for(moderator)
    assert (
        client.post("/api/v1/cases/claim-next/", {"queue": "high-harm"}, format="json").json()["id"]
        == b.id
    )
    client2 = api_client_for(moderator)
    claims.case_release(case=b, user=moderator)
    assert (
        client2.post("/api/v1/cases/claim-next/", {"queue": "drugs"}, format="json").json()["id"]
        == drugs.id
    )


@pytest.mark.django_db
def test_no_case_gives_204(moderator):
    assert (
        api_client_for(moderator).post("/api/v1/cases/claim-next/", {}, format="json").status_code
        == 204
    )


@pytest.mark.django_db
def test_unknown_queue_is_404(moderator):
    response = api_client_for(moderator).post(
        "/api/v1/cases/claim-next/", {"queue": "nope"}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_two_moderators_get_different_cases(moderator, moderator2):
    open_cases(0.6, 0.7)
    first = api_client_for(moderator).post("/api/v1/cases/claim-next/").json()["id"]
    second = api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"]
    assert first != second
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"] == second


@pytest.mark.django_db
def test_decision_needs_the_lease(moderator, moderator2):
    (case,) = open_cases(0.6)
    api_client_for(moderator).post("/api/v1/cases/claim-next/")
    payload = {
        "verdict": "violation",
        "policy": "firearms",
        "action": "remove",
        "notes": "real pistol",
    }
    response = api_client_for(moderator2).post(
        f"/api/v1/cases/{case.id}/decision/", payload, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_not_held"
    assert Decision.objects.count() == 0
    case.refresh_from_db()
    assert case.state == "claimed"
    assert case.claimed_by == moderator


@pytest.mark.django_db
def test_an_expired_lease_cannot_decide_and_goes_back_to_the_queue(moderator, moderator2):
    (case,) = open_cases(0.6)
    api_client_for(moderator).post("/api/v1/cases/claim-next/")
    Case.objects.filter(id=case.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    payload = {"verdict": "no_violation", "action": "none"}
    assert (
        api_client_for(moderator)
        .post(f"/api/v1/cases/{case.id}/decision/", payload, format="json")
        .status_code
        == 409
    )
    assert claims.leases_release_expired() == 1
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"] == case.id
    assert AuditEvent.objects.filter(action="lease_expired", object_id=str(case.id)).exists()


@pytest.mark.django_db
def test_a_decision_is_recorded_audited_and_enforced(moderator):
    (case,) = open_cases(0.6)
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    payload = {
        "verdict": "violation",
        "policy": "firearms",
        "action": "remove",
        "notes": "<b>pistol</b>",
        "time_on_case_ms": 4200,
    }
    response = client.post(f"/api/v1/cases/{case.id}/decision/", payload, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (
        body["verdict"],
        body["policy"],
        body["action"],
        body["source"],
        body["decided_by"],
    ) == ("violation", "firearms", "remove", "human", moderator.username)
    assert body["ladder_version"] == 1
    assert body["time_on_case_ms"] == 4200
    case.refresh_from_db()
    assert case.state == "decided"
    assert case.claimed_by is None
    decision = Decision.objects.get(case=case)
    # the seller's first strike: the removal, and a warning
    assert sorted(
        Enforcement.objects.filter(decision=decision).values_list("action", flat=True)
    ) == [
        "remove_listing",
        "warn_seller",
    ]
    audit = AuditEvent.objects.get(action="decision_recorded", object_id=str(case.id))
    assert audit.actor == moderator
    assert audit.trace_id == case.trace_id
    assert audit.data["decision_id"] == decision.id
    detail = client.get(f"/api/v1/cases/{case.id}/").json()
    assert detail["decisions"][0]["notes"] == "<b>pistol</b>"
    # deciding twice is refused: the lease is gone
    assert (
        client.post(f"/api/v1/cases/{case.id}/decision/", payload, format="json").status_code == 409
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"verdict": "violation", "action": "remove"}, "policy"),
        ({"verdict": "violation", "policy": "firearms", "action": "none"}, "action"),
        ({"verdict": "no_violation", "action": "remove"}, "action"),
        ({"verdict": "maybe", "action": "none"}, "verdict"),
        ({"verdict": "violation", "policy": "weapons", "action": "remove"}, "policy"),
        ({"verdict": "no_violation", "action": "none", "notes": "x" * 5001}, "notes"),
    ],
)
def test_bad_decisions_are_400_and_change_nothing(moderator, payload, field):
    (case,) = open_cases(0.6)
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    response = client.post(f"/api/v1/cases/{case.id}/decision/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    case.refresh_from_db()
    assert case.state == "claimed"
    assert Decision.objects.count() == 0


@pytest.mark.django_db
def test_no_violation_records_no_enforcement(moderator):
    (case,) = open_cases(0.6)
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    client.post(
        f"/api/v1/cases/{case.id}/decision/",
        {"verdict": "no_violation", "action": "none"},
        format="json",
    )
    assert Decision.objects.get().policy is None
    assert Enforcement.objects.count() == 0


@pytest.mark.django_db
def test_decisions_and_audit_events_are_append_only(moderator):
    from django.db import connection, transaction
    from django.db.utils import DatabaseError

    (case,) = open_cases(0.97)  # automatic removal
    decision = Decision.objects.get(case=case)
    decision.notes = "rewritten"
    with pytest.raises(AppendOnlyError):
        decision.save()
    with pytest.raises(AppendOnlyError):
        Decision.objects.filter(id=decision.id).update(notes="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    if connection.vendor == "postgresql":
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cur,
        ):
            cur.execute("UPDATE reviews_decision SET notes = 'x' WHERE id = %s", [decision.id])
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cur,
        ):
            cur.execute("DELETE FROM core_auditevent")
    assert Decision.objects.get(id=decision.id).notes != "x"


@pytest.mark.django_db
def test_cases_by_listing(moderator):
    (case,) = open_cases(0.6, listing="listing-xyz")
    body = api_client_for(moderator).get("/api/v1/cases/?listing=listing-xyz").json()
    assert [c["id"] for c in body] == [case.id]
    assert body[0]["listing"]["id"] == "listing-xyz"
    assert api_client_for(moderator).get("/api/v1/cases/?listing=other").json() == []
    assert api_client_for(moderator).get("/api/v1/cases/").status_code == 400


@pytest.mark.django_db
def test_release_gives_the_case_back(moderator, moderator2):
    (case,) = open_cases(0.6)
    api_client_for(moderator).post("/api/v1/cases/claim-next/")
    assert api_client_for(moderator2).post(f"/api/v1/cases/{case.id}/release/").status_code == 409
    assert api_client_for(moderator).post(f"/api/v1/cases/{case.id}/release/").status_code == 200
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"] == case.id
