import json
import logging

import pytest
from django.test import override_settings

from detection.models import DeadLetter, DetectionEvent, Listing, ListingImage, Seller
from moderation_portal.core.models import AuditEvent
from reviews.models import Case, Decision, Enforcement
from tests import factories as f
from tests.conftest import api_client_for

URL = "/api/v1/detections/"


def post(client, body):
    return client.post(
        URL,
        data=json.dumps(body) if not isinstance(body, str | bytes) else body,
        content_type="application/json",
    )


def counts():
    return (
        DetectionEvent.objects.count(),
        Case.objects.count(),
        DeadLetter.objects.count(),
        Listing.objects.count(),
    )


@pytest.mark.django_db
def test_a_batch_is_answered_per_event_and_nothing_is_dropped(tier_client):
    good = f.event(score=0.8)
    batch = [
        good,
        dict(good),
        f.mutate(f.event(), "detection.scores", {"firearms": 3}),
        f.event(policy="drugs", score=0.6),
    ]
    response = post(tier_client, batch)
    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "duplicate",
        "rejected",
        "accepted",
    ]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 1)
    assert body["results"][2]["reasons"] == [
        {
            "field": "detection.scores.firearms",
            "code": "out_of_range",
            "message": "3 is outside [0, 1]",
        }
    ]
    # events in = accepted + duplicates + dead letters
    assert DetectionEvent.objects.count() == 2
    assert DeadLetter.objects.count() == 1
    assert Case.objects.count() == 2
    letter = DeadLetter.objects.get()
    assert json.loads(letter.payload)["event_id"] == batch[2]["event_id"]
    assert body["results"][2]["dead_letter_id"] == letter.id


@pytest.mark.django_db
def test_the_same_event_twice_makes_one_case(tier_client):
    ev = f.event()
    assert post(tier_client, [ev]).json()["results"][0]["status"] == "accepted"
    assert post(tier_client, [ev]).json()["results"][0]["status"] == "duplicate"
    assert Case.objects.filter(detection_event__event_id=ev["event_id"]).count() == 1


@pytest.mark.django_db
def test_accepted_event_creates_rows_and_routes_by_the_ladder(tier_client):
    body = post(
        tier_client,
        [
            f.event(score=0.97, seller="s-9"),
            f.event(score=0.6, seller="s-9"),
            f.event(score=0.4),
            f.event(score=0.1, sample=True),
            f.event(score=0.8),
        ],
    ).json()
    assert body["accepted"] == 5
    routes = dict(Case.objects.values_list("score", "route"))
    assert routes == {
        0.97: "auto_action",
        0.6: "human_review",
        0.4: "monitor",
        0.1: "allow",
        0.8: "llm_verify",
    }
    auto = Case.objects.get(score=0.97)
    assert auto.state == "closed"
    decision = Decision.objects.get(case=auto)
    assert (decision.source, decision.verdict, decision.action) == (
        "automatic",
        "violation",
        "remove",
    )
    # s-9's first strike: the removal also warns the seller.
    actions = Enforcement.objects.filter(decision=decision).values_list("action", flat=True)
    assert sorted(actions) == ["remove_listing", "warn_seller"]
    medium = Case.objects.get(score=0.8)
    assert (medium.state, medium.llm_state) == ("queued", "not_configured")
    assert "LLM verifier not configured" in medium.route_reason
    assert Seller.objects.filter(external_id="s-9").count() == 1
    img = ListingImage.objects.get(listing=auto.listing)
    assert img.state == "stored"
    assert img.content.read()[:4] == b"\x89PNG"


@pytest.mark.django_db
def test_trace_id_is_carried_into_audit_and_logs(tier_client, caplog):
    caplog.set_level(logging.INFO)
    ev = f.event(trace_id="trace-abc-123")
    post(tier_client, [ev])
    case = Case.objects.get()
    assert case.trace_id == "trace-abc-123"
    audit = AuditEvent.objects.get(action="case_opened")
    assert audit.trace_id == "trace-abc-123"
    assert audit.object_id == str(case.id)
    lines = [r for r in caplog.records if getattr(r, "trace_id", None) == "trace-abc-123"]
    assert any("accepted" in r.getMessage() for r in lines)
    assert any("opened" in r.getMessage() for r in lines)


@pytest.mark.django_db
def test_unparseable_body_is_kept_as_a_dead_letter(tier_client):
    response = post(tier_client, '[{"event_id": "x", ')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unparseable_json"
    letter = DeadLetter.objects.get(id=error["details"]["dead_letter_id"])
    assert letter.payload == '[{"event_id": "x", '
    assert letter.reasons[0]["code"] == "unparseable_json"


@pytest.mark.django_db
def test_a_body_that_is_not_a_list(tier_client):
    response = post(tier_client, f.event())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_type"
    assert DetectionEvent.objects.count() == 0
    assert DeadLetter.objects.count() == 1


@pytest.mark.django_db
@override_settings(INGEST_MAX_BATCH=3)
def test_a_batch_over_the_limit_is_refused_and_kept(tier_client):
    batch = [f.event() for _ in range(4)]
    response = post(tier_client, batch)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    body = response.json()["error"]["details"]
    assert body["rejected"] == 4
    assert {r["reasons"][0]["code"] for r in body["results"]} == {"batch_too_large"}
    assert DetectionEvent.objects.count() == 0
    assert DeadLetter.objects.count() == 4


@pytest.mark.django_db
def test_a_bad_event_does_not_lose_the_rest_of_its_batch(tier_client):
    batch = [
        f.event(),
        "not json at all",
        42,
        None,
        f.event(images=[f.inline_image(data=b"GIF89a-broken")]),
        f.event(),
    ]
    body = post(tier_client, batch).json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert DeadLetter.objects.count() == 4
    assert Case.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "bad_token", "moderator", "outsider", "policy_admin"])
def test_only_the_detection_tier_may_ingest(who, anon_client, moderator, outsider, policy_admin):
    clients = {
        "anonymous": anon_client,
        "moderator": api_client_for(moderator),
        "outsider": api_client_for(outsider),
        "policy_admin": api_client_for(policy_admin),
    }
    if who == "bad_token":
        client = anon_client
        client.credentials(HTTP_AUTHORIZATION="Token mpt_not-a-real-token")
    else:
        client = clients[who]
    before = counts()
    response = post(client, [f.event()])
    assert response.status_code in (401, 403)
    assert "error" in response.json()
    assert counts() == before


@pytest.mark.django_db
def test_revoked_tokens_are_refused(tier_client, service_token):
    from django.utils import timezone

    from detection.models import ServiceToken

    ServiceToken.objects.update(revoked_at=timezone.now())
    assert post(tier_client, [f.event()]).status_code == 401
    assert DetectionEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_event_schema_is_served_and_matches_the_validator(tier_client, moderator, anon_client):
    response = tier_client.get("/api/v1/schema/detection-event.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["properties"]["schema_version"] == {"const": 1}
    assert schema["properties"]["listing"]["properties"]["title"]["maxLength"] == 300
    assert sorted(
        schema["properties"]["detection"]["properties"]["scores"]["propertyNames"]["enum"]
    ) == sorted(["firearms", "drugs", "counterfeit", "stolen_goods", "human_trafficking", "scam"])
    from jsonschema import Draft202012Validator

    assert not list(Draft202012Validator(schema).iter_errors(f.event()))
    assert api_client_for(moderator).get("/api/v1/schema/detection-event.json").status_code == 200
    assert anon_client.get("/api/v1/schema/detection-event.json").status_code in (401, 403)


@pytest.mark.django_db
def test_the_published_schema_file_is_current():
    from pathlib import Path

    from detection.intake.schema import event_schema

    published = json.loads(
        (
            Path(__file__).resolve().parents[2] / "docs" / "detection-event.v1.schema.json"
        ).read_text()
    )
    assert published == event_schema(), (
        "run `make schema` to refresh docs/detection-event.v1.schema.json"
    )


@pytest.mark.django_db
def test_openapi_schema_names_the_fixed_endpoints(tier_client, anon_client):
    response = tier_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = (
        response.json()["paths"]
        if response["Content-Type"].startswith("application/json")
        else None
    )
    if paths is None:
        import yaml

        paths = yaml.safe_load(response.content)["paths"]
    for path in [
        "/api/v1/detections/",
        "/api/v1/cases/claim-next/",
        "/api/v1/cases/{case_id}/decision/",
        "/api/v1/cases/{case_id}/",
        "/api/v1/cases/",
    ]:
        assert path in paths
    assert anon_client.get("/api/v1/schema/").status_code in (401, 403)
