import re

import pytest
from django.test import Client

from moderation_portal.core.models import AuditEvent
from reviews.models import Case, Decision, UserPreference
from tests.reviews.helpers import open_cases


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_page_shows_the_evidence_in_one_view(moderator):
    first, again = open_cases(0.6, 0.65, listing="same-listing")
    client = logged_in(moderator)
    client.post("/queues/all/claim/")
    page = client.get(f"/cases/{again.id}/").content.decode()
    for marker in [
        'id="listing-title"',
        'id="images"',
        'id="enrichment"',
        'id="llm-verdict"',
        "This listing's earlier cases",
        'id="seller-link"',
        'id="help"',
        "<kbd>?</kbd>",
    ]:
        assert marker in page, marker
    assert f'href="/cases/{first.id}/"' in page  # the listing's earlier case
    assert "LLM verifier not configured" not in page  # 0.65 is below the LLM band


@pytest.mark.django_db
def test_images_follow_the_moderators_preference(moderator):
    (case,) = open_cases(0.6)
    client = logged_in(moderator)
    body_class = re.compile(r'<body class="([^"]*)"')
    assert {"pref-blur", "pref-grey"} <= set(
        body_class.search(client.get(f"/cases/{case.id}/").content.decode()).group(1).split()
    )
    client.post("/preferences/", {"greyscale_images": "on"})
    pref = UserPreference.objects.get(user=moderator)
    assert (pref.blur_images, pref.greyscale_images) == (False, True)
    classes = set(
        body_class.search(client.get(f"/cases/{case.id}/").content.decode()).group(1).split()
    )
    assert "pref-grey" in classes
    assert "pref-blur" not in classes


@pytest.mark.django_db
def test_status_and_evidence_fragments(moderator, moderator2):
    (case,) = open_cases(0.6)
    logged_in(moderator).post("/queues/all/claim/")
    response = logged_in(moderator2).get(f"/cases/{case.id}/status/")
    assert response["X-Holds-Claim"] == "0"
    assert "claimed by mod-ana" in response.content.decode()
    assert logged_in(moderator).get(f"/cases/{case.id}/status/")["X-Holds-Claim"] == "1"
    assert (
        'id="images"' in logged_in(moderator2).get(f"/cases/{case.id}/evidence/").content.decode()
    )


@pytest.mark.django_db
def test_queue_detail_lists_pending_cases_in_priority_order(moderator):
    low, high = open_cases(0.55, 0.69)
    page = logged_in(moderator).get("/queues/all/").content.decode()
    order = re.findall(r'<tr data-case="(\d+)">', page)
    assert order == [str(high.id), str(low.id)]


@pytest.mark.django_db
def test_bulk_decision_for_a_sellers_pending_listings_needs_confirmation(moderator, moderator2):
    low, middle, high = open_cases(0.6, 0.62, 0.64, seller="bulk-seller")
    other = open_cases(0.66, seller="someone-else")[0]
    client = logged_in(moderator)
    # claim order: the bulk seller's reach (3 listings) outweighs the other seller's higher score
    client.post("/queues/all/claim/")
    held = Case.objects.get(claimed_by=moderator)
    logged_in(moderator2).post("/queues/all/claim/")
    colleague = Case.objects.get(claimed_by=moderator2)
    assert (held.id, colleague.id) == (high.id, middle.id)
    seller_id = low.listing.seller_id
    page = client.get(f"/sellers/{seller_id}/bulk/").content.decode()
    listed = set(map(int, re.findall(r'name="case" value="(\d+)"', page)))
    assert listed == {
        low.id,
        high.id,
    }  # queued, or held by this moderator; not the colleague's, not another seller's
    form = {
        "case": [str(c) for c in sorted(listed)],
        "verdict": "violation",
        "policy": "firearms",
        "action": "remove",
    }
    client.post(f"/sellers/{seller_id}/bulk/", form)  # no confirmation: nothing happens
    assert Decision.objects.count() == 0
    # the colleague's case and another seller's are slipped into the form: both are left alone
    response = client.post(
        f"/sellers/{seller_id}/bulk/",
        {**form, "confirm": "yes", "case": [*form["case"], str(colleague.id), str(other.id)]},
    )
    assert response.status_code == 302
    decided = list(
        Decision.objects.order_by("case_id").values_list(
            "case_id", "source", "decided_by", "action"
        )
    )
    assert decided == [
        (low.id, "human", moderator.id, "remove"),
        (high.id, "human", moderator.id, "remove"),
    ]
    states = dict(Case.objects.values_list("id", "state"))
    assert (states[low.id], states[high.id]) == ("decided", "decided")
    colleague.refresh_from_db()
    assert (colleague.state, colleague.claimed_by) == ("claimed", moderator2)
    assert not Decision.objects.filter(case=colleague).exists()
    other.refresh_from_db()
    assert (other.state, other.claimed_by) == ("queued", None)
    assert not Decision.objects.filter(case=other).exists()
    audit = AuditEvent.objects.get(action="bulk_decision")
    assert sorted(audit.data["cases"]) == [low.id, high.id]
    assert audit.actor == moderator
    assert audit.object_id == str(seller_id)
