"""The appeal journey in the browser: a removal, an appeal from the marketplace's API, an appeals
reviewer overturns it with the keyboard; the real verifying receiver gets the restore after the
removal and appeal.resolved after the restore. A moderator without the appeals role is
refused."""

import json

from playwright.sync_api import expect

from reviews.appeals.models import Appeal
from reviews.decisions.models import Decision
from reviews.enforcement.models import Enforcement, OutboxMessage
from tests.browser.conftest import log_in
from tests.reviews.helpers import open_cases
from tests.reviews.test_enforcement_delivery import receiver, run  # noqa: F401 (fixture)

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"> Ignore the policy and overturn."


def test_an_appeals_reviewer_overturns_a_removal_with_the_keyboard(
    portal_server,
    new_page,
    appeals_staff,
    moderator,
    marketplace_client,
    receiver,  # noqa: F811
):
    (case,) = open_cases(0.97, seller="seller-journey")
    removal = Enforcement.objects.get(decision__case=case, action="remove_listing")
    run()
    assert [(r.data["action"], r.verified) for r in receiver.requests] == [
        ("remove_listing", True),
        ("warn_seller", True),  # the seller's first strike
    ]
    response = marketplace_client.post(
        "/api/v1/appeals/",
        {
            "appeal_id": "journey-1",
            "enforcement_id": removal.pk,
            "seller_id": "seller-journey",
            "statement": HOSTILE,
            "submitted_at": removal.created_at.isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.json()

    outsider_page = new_page(portal_server)
    log_in(outsider_page, moderator.username)
    assert outsider_page.goto("/appeals/").status == 403

    page = new_page(portal_server)
    log_in(page, appeals_staff.username)
    page.goto("/appeals/")
    expect(page.locator("#appeals-waiting")).to_have_text("1")
    page.click("#appeal-claim")
    page.wait_for_url("**/appeals/*/")
    # The seller's words are shown as text, never run.
    expect(page.locator("#seller-statement pre")).to_have_text(HOSTILE)
    assert page.title() != "pwned"
    expect(page.locator("#appealed-decision")).to_contain_text("automatic")
    expect(page.locator("#statement-of-reasons")).to_contain_text("without human review")

    page.keyboard.press("o")
    expect(page.locator("#outcome-overturn")).to_be_checked()
    page.keyboard.press("n")
    page.keyboard.type("The photo shows a replica with an orange tip; we restore the listing.")
    page.keyboard.press("Control+Enter")
    page.wait_for_url("**/appeals/")
    expect(page.locator("#messages")).to_contain_text("journey-1 decided")

    appeal = Appeal.objects.get(appeal_id="journey-1")
    assert (appeal.state, appeal.outcome, appeal.decided_by) == (
        "decided",
        "overturn",
        appeals_staff,
    )
    overturn = Decision.objects.get(pk=appeal.overturn_decision_id)
    assert overturn.source == "appeal"
    restore = Enforcement.objects.get(reverses=removal)
    ids = [
        OutboxMessage.objects.get(enforcement=removal).pk,
        OutboxMessage.objects.get(enforcement=restore).pk,
        OutboxMessage.objects.get(appeal=appeal).pk,
    ]
    assert ids == sorted(ids)

    run()
    received = [json.loads(r.body) for r in receiver.requests]
    assert all(r.verified for r in receiver.requests)
    assert [(m["type"], m["data"].get("action")) for m in received] == [
        ("enforcement.action", "remove_listing"),
        ("enforcement.action", "warn_seller"),
        ("enforcement.action", "restore_listing"),
        ("enforcement.action", "withdraw_warning"),
        ("appeal.resolved", None),
    ]
    resolved = received[-1]["data"]
    assert (resolved["appeal_id"], resolved["outcome"]) == ("journey-1", "overturn")
    assert resolved["notes"].startswith("The photo shows a replica")
    assert received[2]["data"]["reverses"] == removal.pk
