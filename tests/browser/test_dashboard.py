"""The dashboard in a real browser: a QA lead opens it from the navigation, the server-drawn SVG
charts render with their stylesheet under the strict content security policy (no violation,
no console error), the numbers are there under each chart, and the period can be switched."""

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases

CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""
CHARTS = (
    "chart-queue-depth",
    "chart-sla",
    "chart-mix-source",
    "chart-mix-policy",
    "chart-automation",
    "chart-scores-0",
)


def _decide_all(user, n: int) -> None:
    client = api_client_for(user)
    for _ in range(n):
        case = client.post("/api/v1/cases/claim-next/").json()
        response = client.post(
            f"/api/v1/cases/{case['id']}/decision/",
            {"verdict": "violation", "policy": "firearms", "action": "remove"},
            format="json",
        )
        assert response.status_code == 201, response.json()


def test_a_qa_lead_sees_the_charts_under_the_csp_and_switches_the_period(
    portal_server, new_page, qa_lead, moderator
):
    for n in range(3):
        open_cases(0.97, seller=f"seller-auto-{n}")
    open_cases(0.6, 0.65, 0.7, seller="seller-h")
    _decide_all(moderator, 2)
    open_cases(0.55, 0.35, policy="drugs")

    page = new_page(portal_server)
    page.add_init_script(CSP_LISTENER)
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(f"{m.text} at {m.location.get('url')}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, qa_lead.username)
    page.click("#nav-dashboard")
    page.wait_for_url("**/dashboard/")
    expect(page.locator("#period-7")).to_have_attribute("aria-current", "page")
    page.set_viewport_size({"width": 1400, "height": 900})

    for chart_id in CHARTS:
        box = page.locator(f"svg#{chart_id}").bounding_box()
        assert box is not None, chart_id
        assert box["width"] > 200, (chart_id, box)
        assert box["height"] > 60, (chart_id, box)
    bars = page.locator("#chart-mix-source rect.column")
    assert bars.count() == 2  # today's bar: automatic and moderator
    assert bars.first.bounding_box()["height"] > 10
    # the colours come from static/css/dashboard.css, so the stylesheet loaded under the CSP
    fill = page.eval_on_selector(
        "#chart-mix-source rect.column.series-0", "e => getComputedStyle(e).fill"
    )
    assert fill == "rgb(0, 114, 178)"
    line = page.locator("#chart-queue-depth polyline.line").first
    assert (
        page.eval_on_selector("#chart-queue-depth polyline.line", "e => getComputedStyle(e).fill")
        == "none"
    )
    assert line.bounding_box()["width"] > 100

    figure = page.locator('figure[data-chart="chart-mix-source"]')
    figure.locator("summary").click()
    table = figure.locator("table.chart-table")
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(7)
    expect(table.locator("tbody tr").last).to_contain_text("3")
    expect(page.locator("#sla-rate")).to_have_text("100.0%")
    expect(page.locator("#llm-chart-empty")).to_be_visible()  # no LLM in this test

    page.click("#period-30")
    page.wait_for_url("**/dashboard/?days=30")
    expect(page.locator("#period-30")).to_have_attribute("aria-current", "page")
    expect(page.locator('figure[data-chart="chart-mix-source"] tbody tr')).to_have_count(30)
    page.click("#period-1")
    page.wait_for_url("**/dashboard/?days=1")
    expect(page.locator('figure[data-chart="chart-sla"] tbody tr')).to_have_count(24)
    assert page.locator("svg#chart-queue-depth").bounding_box()["width"] > 200
    page.goto("/dashboard/?days=banana")
    expect(page.locator("#period-note")).to_contain_text("showing the last 7 days")

    assert page.evaluate("window.__cspViolations") == []
    # the portal serves no favicon; Chromium asks for one anyway
    assert [e for e in errors if not e.endswith("/favicon.ico")] == []
    # the listener does hear a violation: an inline style attribute is refused
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color:red\">x</p>')")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert "style-src" in page.evaluate("window.__cspViolations")[0]
