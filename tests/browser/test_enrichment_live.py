import re

from playwright.sync_api import expect

from detection.evidence.enrichment import step_run, steps_create
from tests.browser.conftest import log_in
from tests.reviews.helpers import open_cases


def test_enrichment_results_appear_on_an_open_review_page(
    portal_server, new_page, moderator, settings, tmp_path
):
    settings.DETECTION_MODEL_CONFIG = str(
        tmp_path / "no-model.json"
    )  # heatmaps and neighbours: not available
    (case,) = open_cases(0.6)
    steps_create(event_ids=[case.detection_event_id])
    page = new_page(portal_server)
    log_in(page, moderator.username)
    page.locator('tr[data-queue="all"] button', has_text="Claim next").click()
    page.wait_for_url(re.compile(rf"/cases/{case.id}/"))
    page.evaluate("window.loadedOnce = true")
    expect(page.locator('li[data-step="hashes"]')).to_contain_text("pending")
    # a worker finishes the steps while the page is open
    for name in ("hashes", "heatmaps", "neighbours"):
        step_run(event_id=case.detection_event_id, name=name)
    expect(page.locator('li[data-step="hashes"]')).to_contain_text("done")
    expect(page.locator('li[data-step="heatmaps"]')).to_contain_text("image model not configured")
    expect(page.locator('li[data-step="neighbours"]')).to_contain_text(
        "no reference index is active"
    )
    assert page.evaluate("window.loadedOnce") is True  # no reload
