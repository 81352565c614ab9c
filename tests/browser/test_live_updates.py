import re

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.reviews.helpers import open_cases


def test_queue_pages_follow_claims_and_decisions_elsewhere_without_a_reload(
    portal_server, new_page, moderator, moderator2
):
    high, low = open_cases(0.69, 0.55)
    watcher = new_page(portal_server)
    log_in(watcher, moderator2.username)
    watcher.goto("/queues/all/")
    watcher.evaluate("window.loadedOnce = true")  # gone if the page reloads
    expect(watcher.locator(f'tr[data-case="{high.id}"]')).to_contain_text("waiting for a moderator")

    worker = new_page(portal_server)
    log_in(worker, moderator.username)
    expect(worker.locator('tr[data-queue="all"] td.pending')).to_have_text("2")
    worker.locator('tr[data-queue="all"] button', has_text="Claim next").click()
    worker.wait_for_url(re.compile(rf"/cases/{high.id}/"))
    expect(watcher.locator(f'tr[data-case="{high.id}"]')).to_contain_text(
        f"claimed ({moderator.username})"
    )

    worker.keyboard.press("n")
    worker.keyboard.press("Enter")
    worker.wait_for_url(re.compile(rf"/cases/{low.id}/"))
    expect(watcher.locator(f'tr[data-case="{high.id}"]')).to_have_count(0)
    expect(watcher.locator("#queue-summary")).to_contain_text("0 waiting · 1 claimed")
    assert watcher.evaluate("window.loadedOnce") is True


def test_the_help_overlay_and_every_keyboard_action(portal_server, new_page, moderator):
    (case,) = open_cases(0.6, policy="drugs")
    page = new_page(portal_server)
    log_in(page, moderator.username)
    page.locator('tr[data-queue="all"] button', has_text="Claim next").click()
    page.wait_for_url(re.compile(rf"/cases/{case.id}/"))
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    page.keyboard.press("6")  # scam
    expect(page.locator("#policy")).to_have_value("scam")
    page.keyboard.press("w")
    expect(page.locator("#action")).to_have_value("warn")
    expect(page.locator('input[name="verdict"][value="violation"]')).to_be_checked()
    page.keyboard.press("a")
    expect(page.locator("#action")).to_have_value("remove")
    page.keyboard.press("/")
    page.keyboard.type("counterfeit gift cards")
    page.keyboard.press("Escape")
    page.keyboard.press("s")
    expect(page.locator("#skip-reason")).to_be_focused()
    page.keyboard.type("needs a second look")
    page.keyboard.press("Enter")
    page.wait_for_url("**/queues/")
    from reviews.models import CaseSkip

    assert CaseSkip.objects.get(case=case, user=moderator).reason == "needs a second look"
