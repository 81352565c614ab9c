import re

from playwright.sync_api import expect

from reviews.models import Case, Decision
from tests.browser.conftest import log_in
from tests.reviews.helpers import open_cases


def test_a_moderator_claims_reviews_with_the_keyboard_and_gets_the_next_case(
    portal_server, new_page, moderator
):
    first, second = open_cases(0.69, 0.6, title='<img src=x onerror="window.pwned=1">Glock 19')
    page = new_page(portal_server)
    log_in(page, moderator.username)
    expect(page.locator('tr[data-queue="all"] td.pending')).to_have_text("2")
    page.locator('tr[data-queue="all"] button', has_text="Claim next").click()
    page.wait_for_url(re.compile(rf"/cases/{first.id}/"))
    # adversarial text shows as text, never runs
    expect(page.locator("#listing-title")).to_have_text(
        '<img src=x onerror="window.pwned=1">Glock 19'
    )
    assert page.evaluate("window.pwned === undefined")
    # images start blurred; "r" reveals one
    image = page.locator("#images img.photo").first
    expect(image).to_have_class(re.compile("concealed"))
    page.keyboard.press("r")
    expect(image).not_to_have_class(re.compile("concealed"))
    # decide with the keyboard alone: v (violation), then Enter submits and opens the next case
    page.keyboard.press("v")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/cases/{second.id}/"))
    decision = Decision.objects.get(case=first)
    assert (decision.verdict, decision.policy_id, decision.action, decision.decided_by_id) == (
        "violation",
        "firearms",
        "remove",
        moderator.id,
    )
    page.keyboard.press("n")
    page.keyboard.press("Enter")
    page.wait_for_url("**/queues/")
    assert Decision.objects.get(case=second).verdict == "no_violation"
    assert set(Case.objects.values_list("state", flat=True)) == {"decided"}


def test_two_moderators_never_see_the_same_case(portal_server, new_page, moderator, moderator2):
    open_cases(0.69, 0.6)
    ana, ben = new_page(portal_server), new_page(portal_server)
    log_in(ana, moderator.username)
    log_in(ben, moderator2.username)
    ana.locator('tr[data-queue="all"] button', has_text="Claim next").click()
    ben.locator('tr[data-queue="all"] button', has_text="Claim next").click()
    ana.wait_for_url(re.compile(r"/cases/\d+/"))
    ben.wait_for_url(re.compile(r"/cases/\d+/"))
    assert ana.url.split("?")[0] != ben.url.split("?")[0]
    claims = dict(Case.objects.values_list("claimed_by__username", "id"))
    assert set(claims) == {moderator.username, moderator2.username}
