"""The labeling queue in the browser: a moderator claims from /labeling/, the image stays
blurred and grey until `r` reveals it, answers with the keyboard (v, then Enter) and lands on
the next item, then on the queue; hostile listing text is shown as text. No decision, no
enforcement."""

import re

from django.utils import timezone
from playwright.sync_api import expect

from active_learning.labeling.models import LabelingItem
from active_learning.labeling.sampling import labeling_draw
from reviews.decisions.models import Decision
from reviews.enforcement.models import Enforcement
from tests.browser.conftest import log_in
from tests.reviews.helpers import open_cases

HOSTILE = "<img src=x onerror=\"window.pwned=1;document.title='pwned'\"> Label this as safe."


def test_a_moderator_labels_with_the_keyboard(portal_server, new_page, moderator, appeals_staff):
    open_cases(0.42, title=HOSTILE, description=HOSTILE, seller="seller-label")
    open_cases(0.36, seller="seller-label")
    draw = labeling_draw(day=timezone.localdate(), budget=5)
    assert draw.items.count() == 2

    outsider = new_page(portal_server)
    log_in(outsider, appeals_staff.username)
    assert outsider.goto("/labeling/").status == 403

    page = new_page(portal_server)
    log_in(page, moderator.username)
    page.click("#nav-labeling")
    page.wait_for_url("**/labeling/")
    expect(page.locator("#labeling-waiting")).to_have_text("2")
    expect(page.locator("#labeling-draw")).to_contain_text("budget 5, pool 2")
    page.click("#labeling-claim")
    page.wait_for_url(re.compile(r"/labeling/\d+/$"))
    first = LabelingItem.objects.get(state="claimed")
    if first.case.listing.title != HOSTILE:
        # the hostile listing is the other one: look at it too, through the page
        hostile = LabelingItem.objects.exclude(pk=first.pk).get()
    else:
        hostile = first
    expect(page.locator("#labeling-policy")).to_have_text("Firearms and weapons")

    image = page.locator("#images img.photo").first
    expect(image).to_have_class(re.compile("concealed"))
    assert "blur" in image.evaluate("img => getComputedStyle(img).filter")
    assert "grayscale" in image.evaluate("img => getComputedStyle(img).filter")
    page.keyboard.press("r")
    expect(image).not_to_have_class(re.compile("concealed"))

    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()

    page.keyboard.press("v")
    expect(page.locator("#answer-violation")).to_be_checked()
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: not url.endswith(f"/labeling/{first.pk}/"))
    second = LabelingItem.objects.get(state="claimed")
    assert page.url.endswith(f"/labeling/{second.pk}/")
    expect(page.locator("#messages")).to_contain_text(f"Labeled item {first.pk}: violation")
    if hostile.pk == second.pk:
        expect(page.locator("#listing-title")).to_have_text(HOSTILE)
        expect(page.locator("#listing-description")).to_have_text(HOSTILE)

    page.keyboard.press("n")
    page.keyboard.press("Enter")
    page.wait_for_url("**/labeling/")
    expect(page.locator("#messages")).to_contain_text("No item is waiting to be labeled.")
    expect(page.locator("#labeling-waiting")).to_have_text("0")
    expect(page.locator('tr[data-policy="firearms"][data-strategy]').first).to_be_visible()

    # the hostile listing's page, answered now, still shows its text as text
    page.goto(f"/labeling/{hostile.pk}/")
    expect(page.locator("#listing-title")).to_have_text(HOSTILE)
    expect(page.locator("#labeling-answered")).to_contain_text("by mod-ana")
    assert page.evaluate("window.pwned === undefined")
    assert page.title() != "pwned"

    answers = dict(LabelingItem.objects.values_list("pk", "answer"))
    assert answers == {first.pk: "violation", second.pk: "no_violation"}
    assert not Decision.objects.filter(source="human").exists()
    assert not Enforcement.objects.exists()
