from playwright.sync_api import expect

from reviews.models import LadderVersion
from tests.browser.conftest import log_in
from tests.reviews.helpers import open_cases


def test_a_policy_admin_edits_backtests_and_publishes_a_ladder_version(
    portal_server, new_page, policy_admin
):
    open_cases(0.55, 0.6, policy="drugs")
    page = new_page(portal_server)
    log_in(page, policy_admin.username)
    page.goto("/ladder/")
    page.click("#start-draft")
    page.fill('input[name="drugs.review"]', "0.58")
    page.fill("#notes", "drugs: fewer borderline reviews")
    page.click("#save-draft")
    expect(page.locator("#backtest-summary")).to_contain_text("2 cases; 1 would route differently")
    expect(page.locator(".changes").first).to_contain_text("drugs.review: 0.5 → 0.58")
    page.click("#publish")
    expect(page.locator("#messages")).to_contain_text("Published ladder version 2")
    v2 = LadderVersion.objects.get(version=2)
    assert v2.is_active
    assert v2.thresholds["drugs"]["review"] == 0.58
    assert v2.published_by_id == policy_admin.id
    page.goto("/ladder/versions/2/")
    expect(page.locator("#version-diff")).to_contain_text("drugs.review: 0.5 → 0.58")
