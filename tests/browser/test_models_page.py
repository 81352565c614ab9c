"""The champion and challenger page in a real browser, under the strict content security policy: a
QA lead sees the challengers seen, opens one's comparison, and nothing is refused by the CSP and
nothing fails in the console."""

from playwright.sync_api import expect

from reviews.cases.intake import detections_ingest
from tests import factories as f
from tests.browser.conftest import log_in
from tests.conftest import api_client_for

CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


def _keep_error(errors: list[str], message) -> None:
    # Chromium asks for /favicon.ico on its own; the portal has none, and that is not the page's
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(f"{message.text} at {message.location}")


def test_a_qa_lead_compares_a_challenger_under_the_csp(portal_server, new_page, qa_lead, moderator):
    events = [
        f.event(
            score=score,
            challengers=[{"model_version": "2027.01.0-rc1", "scores": {"firearms": shadow}}],
        )
        for score, shadow in ((0.6, 0.97), (0.65, 0.3), (0.97, 0.99))
    ]
    events.append(
        f.event(score=0.7, challengers=[{"model_version": "2027.02.0", "scores": {"scam": 0.8}}])
    )
    assert {o.status for o in detections_ingest(events=events, source="api")} == {"accepted"}
    client = api_client_for(moderator)
    for verdict in ("violation", "no_violation", "violation"):
        case = client.post("/api/v1/cases/claim-next/").json()
        spec = (
            {"verdict": "violation", "policy": "firearms", "action": "remove"}
            if verdict == "violation"
            else {"verdict": "no_violation", "action": "none"}
        )
        response = client.post(f"/api/v1/cases/{case['id']}/decision/", spec, format="json")
        assert response.status_code == 201, response.json()

    page = new_page(portal_server)
    page.add_init_script(CSP_LISTENER)
    errors: list[str] = []
    page.on("console", lambda m: _keep_error(errors, m))
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, qa_lead.username)
    page.goto("/models/")
    expect(page.locator("#challengers tbody tr")).to_have_count(2)
    expect(page.locator('tr[data-challenger="2027.01.0-rc1"] td.num')).to_have_text("3")
    page.click('tr[data-challenger="2027.01.0-rc1"] a')
    page.wait_for_url("**/models/?challenger=2027.01.0-rc1*")
    expect(page.locator("#comparison-cases")).to_contain_text(
        "3 cases of the last 30 days scored by both; 2 decided by people."
    )
    firearms = page.locator('section[data-policy="firearms"]')
    expect(firearms.locator("table.model-figures tbody tr")).to_have_count(2)
    expect(firearms.locator("table.model-routing tbody tr").last).to_contain_text("challenger")
    expect(page.locator('section[data-policy="drugs"] table')).to_have_count(0)
    page.fill("#days", "7")
    page.click("#comparison button[type=submit]")
    page.wait_for_url("**/models/?challenger=2027.01.0-rc1&days=7")
    expect(page.locator("#comparison-cases")).to_contain_text("of the last 7 days")
    assert page.evaluate("window.__cspViolations") == []
    assert errors == []
    # the listener does hear a violation: an inline style attribute is refused
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color:red\">x</p>')")
    page.wait_for_function("window.__cspViolations.length > 0")
