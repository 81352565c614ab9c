"""Every view and endpoint refuses an outsider (and the wrong roles), and nothing changes."""

import pytest
from django.test import Client

from detection.models import DeadLetter, DetectionEvent
from reviews.models import AuditEvent, Case, Decision
from tests import factories as f
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases


def snapshot():
    from reviews.models import CaseSkip, LadderVersion, UserPreference

    return (
        CaseSkip.objects.count(),
        UserPreference.objects.count(),
        list(LadderVersion.objects.values_list("id", "state", "is_active")),
        DetectionEvent.objects.count(),
        DeadLetter.objects.count(),
        list(Case.objects.order_by("id").values_list("id", "state", "claimed_by_id")),
        Decision.objects.count(),
        AuditEvent.objects.count(),
    )


def endpoints(case_id, image_id, seller_id=0):
    decision = {"verdict": "no_violation", "action": "none"}
    return [
        ("get", "/queues/", None, "page"),
        ("get", "/queues/fragment/", None, "page"),
        ("post", "/queues/all/claim/", None, "page"),
        ("get", f"/cases/{case_id}/", None, "page"),
        ("post", f"/cases/{case_id}/decide/", decision, "page"),
        ("post", f"/cases/{case_id}/release/", None, "page"),
        ("get", f"/images/{image_id}/", None, "page"),
        ("get", "/queues/all/", None, "page"),
        ("get", "/heatmaps/1/", None, "page"),
        ("get", "/references/1/image/", None, "page"),
        ("get", "/queues/all/fragment/", None, "page"),
        ("get", f"/cases/{case_id}/evidence/", None, "page"),
        ("get", f"/cases/{case_id}/status/", None, "page"),
        ("post", f"/cases/{case_id}/skip/", {"reason": "not mine"}, "page"),
        ("post", f"/cases/{case_id}/escalate/", {"reason": "not mine"}, "page"),
        ("get", "/preferences/", None, "page"),
        ("post", "/preferences/", {"blur_images": ""}, "page"),
        ("get", f"/sellers/{seller_id}/bulk/", None, "page"),
        ("post", f"/sellers/{seller_id}/bulk/", {"case": [case_id], "confirm": "yes", **decision}, "page"),
        ("get", "/ladder/", None, "page"),
        ("post", "/ladder/draft/start/", None, "page"),
        ("post", "/ladder/publish/", None, "page"),
        ("post", f"/api/v1/cases/{case_id}/heartbeat/", None, "api"),
        ("post", f"/api/v1/cases/{case_id}/skip/", {"reason": "not mine"}, "api"),
        ("post", f"/api/v1/cases/{case_id}/escalate/", {"reason": "not mine"}, "api"),
        ("get", "/api/v1/cases/?listing=x", None, "api"),
        ("get", f"/api/v1/cases/{case_id}/", None, "api"),
        ("post", "/api/v1/cases/claim-next/", {}, "api"),
        ("post", f"/api/v1/cases/{case_id}/decision/", decision, "api"),
        ("post", f"/api/v1/cases/{case_id}/release/", None, "api"),
        ("post", "/api/v1/detections/", [f.event()], "api"),
        ("get", "/api/v1/schema/detection-event.json", None, "api"),
        ("get", "/api/v1/schema/", None, "api"),
    ]


def _call(client, method, url, data, kind):
    if kind == "api":
        return getattr(client, method)(url, data, format="json") if data is not None else getattr(client, method)(url)
    return getattr(client, method)(url, data or {})


@pytest.mark.django_db
def test_anonymous_and_roleless_users_are_refused_everywhere(outsider, moderator2):
    (case,) = open_cases(0.6)
    # a real claim held by somebody else, so a refused decide/release could change something
    api_client_for(moderator2).post("/api/v1/cases/claim-next/")
    image_id = case.listing.images.get().id
    seller_id = case.listing.seller_id
    before = snapshot()
    anonymous_page, anonymous_api = Client(), api_client_for(None)
    outsider_page = Client()
    outsider_page.force_login(outsider)
    outsider_api = api_client_for(outsider)
    for method, url, data, kind in endpoints(case.id, image_id, seller_id):
        for who, client in (("anonymous", anonymous_page if kind == "page" else anonymous_api),
                            ("outsider", outsider_page if kind == "page" else outsider_api)):
            response = _call(client, method, url, data, kind)
            if kind == "page" and who == "anonymous":
                assert response.status_code == 302 and response["Location"].startswith("/login/"), (url, who)
            else:
                assert response.status_code in (401, 403), (method, url, who, response.status_code)
    assert snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("role_fixture", ["appeals_staff", "qa_lead", "policy_admin"])
def test_only_moderators_claim_and_decide(role_fixture, request, moderator2):
    user = request.getfixturevalue(role_fixture)
    (case,) = open_cases(0.6)
    open_cases(0.7)
    api_client_for(moderator2).post("/api/v1/cases/claim-next/")
    before = snapshot()
    api = api_client_for(user)
    page = Client()
    page.force_login(user)
    assert api.post("/api/v1/cases/claim-next/").status_code == 403
    assert api.post(f"/api/v1/cases/{case.id}/decision/", {"verdict": "no_violation", "action": "none"}, format="json").status_code == 403
    assert api.post(f"/api/v1/cases/{case.id}/release/").status_code == 403
    assert page.post("/queues/all/claim/").status_code == 403
    assert page.post(f"/cases/{case.id}/decide/", {"verdict": "no_violation", "action": "none"}).status_code == 403
    assert page.post(f"/cases/{case.id}/release/").status_code == 403
    assert api.post("/api/v1/detections/", [f.event()], format="json").status_code == 403
    assert snapshot() == before
    # they may read
    assert api.get(f"/api/v1/cases/{case.id}/").status_code == 200


@pytest.mark.django_db
def test_the_detection_tier_cannot_use_people_endpoints(tier_client):
    (case,) = open_cases(0.6)
    before = snapshot()
    assert tier_client.post("/api/v1/cases/claim-next/").status_code == 403
    assert tier_client.get(f"/api/v1/cases/{case.id}/").status_code == 403
    assert tier_client.post(f"/api/v1/cases/{case.id}/decision/", {"verdict": "no_violation", "action": "none"}, format="json").status_code == 403
    assert snapshot() == before


@pytest.mark.django_db
def test_health_endpoints():
    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    body = client.get("/readyz").json()
    assert body["status"] == "ok" and body["checks"]["database"]["ok"] is True and body["checks"]["broker"]["ok"] is True


@pytest.mark.django_db
def test_readyz_says_when_the_broker_is_down(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False and response.json()["checks"]["database"]["ok"] is True
