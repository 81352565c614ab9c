import re

import pytest
from django.test import Client

from moderation_portal.core.models import AuditEvent
from reviews.models import Case, Decision
from tests import factories as f
from tests.reviews.helpers import open_cases

PASSWORD = "correct horse battery staple"


def login(user) -> Client:
    client = Client()
    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, "login failed"
    return client


@pytest.mark.django_db
def test_login_page_and_bad_password(moderator):
    client = Client()
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": moderator.username, "password": "wrong"})
    assert response.status_code == 200
    assert b"did not match" in response.content
    assert client.get("/queues/").status_code == 302


@pytest.mark.django_db
def test_queue_page_shows_pending_counts_per_policy(moderator):
    open_cases(0.6, 0.7)
    open_cases(0.65, policy="drugs")
    open_cases(0.99)  # automatic: not pending
    page = login(moderator).get("/queues/").content.decode()
    row = re.search(r'<tr data-queue="all">(.*?)</tr>', page, re.S).group(1)
    assert '<td class="num pending">3</td>' in row
    assert "firearms 2" in row
    assert "drugs 1" in row
    drugs_row = re.search(r'<tr data-queue="drugs">(.*?)</tr>', page, re.S).group(1)
    assert '<td class="num pending">1</td>' in drugs_row


@pytest.mark.django_db
def test_claim_review_decide_and_move_to_the_next_case(moderator):
    first, second = open_cases(0.69, 0.6)
    client = login(moderator)
    response = client.post("/queues/all/claim/")
    assert response.status_code == 302
    assert response["Location"] == f"/cases/{first.id}/?queue=all"
    page = client.get(response["Location"]).content.decode()
    assert 'id="decision-form"' in page
    assert 'class="photo concealed"' in page
    assert "pref-blur" in page
    opened = re.search(r'name="opened_at_ms" value="(\d+)"', page).group(1)
    response = client.post(
        f"/cases/{first.id}/decide/",
        {
            "verdict": "violation",
            "policy": "firearms",
            "action": "remove",
            "notes": "real pistol",
            "queue": "all",
            "opened_at_ms": opened,
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"/cases/{second.id}/?queue=all"
    decision = Decision.objects.get(case=first)
    assert (decision.verdict, decision.action, decision.decided_by) == (
        "violation",
        "remove",
        moderator,
    )
    assert decision.time_on_case_ms is not None
    assert decision.time_on_case_ms >= 0
    assert AuditEvent.objects.filter(
        action="decision_recorded", object_id=str(first.id), actor=moderator
    ).exists()
    # the last case: deciding it leads back to the queue page
    response = client.post(
        f"/cases/{second.id}/decide/", {"verdict": "no_violation", "action": "none", "queue": "all"}
    )
    assert response["Location"] == "/queues/"


@pytest.mark.django_db
def test_invalid_decision_form_changes_nothing(moderator):
    (case,) = open_cases(0.6)
    client = login(moderator)
    client.post("/queues/all/claim/")
    response = client.post(
        f"/cases/{case.id}/decide/",
        {"verdict": "violation", "action": "none", "policy": "firearms"},
    )
    assert response.status_code == 302
    assert f"/cases/{case.id}/" in response["Location"]
    assert Decision.objects.count() == 0
    assert Case.objects.get(id=case.id).state == "claimed"


@pytest.mark.django_db
def test_listing_text_is_escaped(moderator):
    evil_title = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    evil_desc = '"><svg onload=alert(2)> {{ 7*7 }} {% now "Y" %}'
    (case,) = open_cases(0.6, title=evil_title, description=evil_desc)
    client = login(moderator)
    client.post("/queues/all/claim/")
    response = client.get(f"/cases/{case.id}/")
    page = response.content.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "<svg onload" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "{{ 7*7 }}" in page
    assert "49" not in re.search(r'id="listing-description">(.*?)</pre>', page, re.S).group(1)
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_images_are_served_only_to_roles(moderator, outsider):
    (case,) = open_cases(0.6, images=[f.inline_image(data=f.png_bytes((1, 2, 3)))])
    image = case.listing.images.get()
    response = login(moderator).get(f"/images/{image.id}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content)[:4] == b"\x89PNG"
    assert login(outsider).get(f"/images/{image.id}/").status_code == 403
    assert Client().get(f"/images/{image.id}/").status_code == 302


@pytest.mark.django_db
def test_logout_releases_claims(moderator):
    (case,) = open_cases(0.6)
    client = login(moderator)
    client.post("/queues/all/claim/")
    assert Case.objects.get(id=case.id).state == "claimed"
    client.post("/logout/")
    case.refresh_from_db()
    assert case.state == "queued"
    assert case.claimed_by is None
    assert AuditEvent.objects.filter(
        action="case_released", object_id=str(case.id), data__reason="logout"
    ).exists()


@pytest.mark.django_db
def test_a_reader_without_the_claim_sees_no_decision_form(moderator, moderator2):
    (case,) = open_cases(0.6)
    login(moderator).post("/queues/all/claim/")
    page = login(moderator2).get(f"/cases/{case.id}/").content.decode()
    assert 'id="decision-form"' not in page
    assert "claimed by mod-ana" in page
