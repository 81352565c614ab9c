"""The dashboard (`/dashboard/`) on PostgreSQL: each figure against fixtures counted by hand,
the period chooser, who may see it, escaping of what the detection tier sends, and a number of
queries that does not grow with the data."""

import math
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from detection.models import DetectionEvent
from reviews.appeals.models import Appeal
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.monitoring import charts, dashboard, drift
from reviews.monitoring.dashboard import (
    SCORE_BINS,
    automation,
    decision_mix,
    llm_agreement,
    period_for,
    period_parse,
    queue_depth,
    score_distributions,
    sla_attainment,
)
from reviews.monitoring.models import DriftAlarm, DriftCheckRun
from tests.llm_verify.conftest import Reply
from tests.reviews.helpers import open_cases
from tests.reviews.test_llm_routing import run_case, verdict
from tests.reviews.test_qa_appeal_figures import appeal, decide
from tests.test_permissions import snapshot

HOSTILE_VERSION = '<script>alert("v")</script>'


def page(user, query: str = "") -> str:
    client = Client()
    client.force_login(user)
    response = client.get("/dashboard/" + query)
    assert response.status_code == 200
    return response.content.decode()


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, element_id
    return match.group(1).strip()


def moderate_each(user, specs: dict[int, dict]) -> None:
    """Claim the next case until every case in `specs` is decided as its spec says."""
    from tests.conftest import api_client_for

    client = api_client_for(user)
    for _ in specs:
        claimed = client.post("/api/v1/cases/claim-next/").json()
        response = client.post(
            f"/api/v1/cases/{claimed['id']}/decision/", specs[claimed["id"]], format="json"
        )
        assert response.status_code == 201, response.json()


VIOLATION = {"verdict": "violation", "policy": "firearms", "action": "remove"}
CLEARED = {"verdict": "no_violation", "action": "none"}


# --- the charts ------------------------------------------------------------------------------


def test_a_chart_escapes_its_labels_and_breaks_a_line_where_a_value_is_missing():
    chart = charts.line_chart(
        chart_id="c",
        title="<b>t</b>",
        description="d & e",
        labels=["<a>", "b", "c"],
        full_labels=["<a>", "b", "c"],
        series=[charts.Series('<img src=x onerror="1">', [1, None, 3])],
    )
    assert "<img" not in chart.svg
    assert "<b>" not in chart.svg
    assert "&lt;img src=x onerror=&quot;1&quot;&gt;" in chart.svg
    assert '<title id="c-title">&lt;b&gt;t&lt;/b&gt;</title>' in chart.svg
    assert chart.svg.count("<polyline") == 2  # one run before the gap, one after
    assert chart.svg.count("<circle") == 2
    assert chart.rows == (("<a>", "1"), ("b", charts.NOTHING), ("c", "3"))  # the page escapes


def test_stacked_columns_are_as_tall_as_their_counts():
    chart = charts.stacked_bars(
        chart_id="s",
        title="t",
        description="d",
        labels=["x", "y"],
        full_labels=["x", "y"],
        series=[charts.Series("a", [1, 2]), charts.Series("b", [0, 3])],
    )
    plot = charts.HEIGHT - charts.TOP - charts.BOTTOM
    heights = [
        float(h) for h in re.findall(r'<rect class="column[^"]*"[^>]*height="([\d.]+)"', chart.svg)
    ]
    assert heights == pytest.approx([plot / 6, 2 * plot / 6, 3 * plot / 6], abs=0.05)  # top 6
    assert chart.rows == (("x", "1", "0", "1"), ("y", "2", "3", "5"))


def test_the_scale_has_round_ticks():
    assert charts.scale([5], charts.Axis()) == (6.0, [0.0, 2.0, 4.0, 6.0])
    assert charts.scale([2], charts.Axis()) == (2.0, [0.0, 1.0, 2.0])
    assert charts.scale([0], charts.Axis()) == (1.0, [0.0, 1.0])
    assert charts.scale([1300], charts.Axis()) == (1500.0, [0.0, 500.0, 1000.0, 1500.0])
    top, ticks = charts.scale([0.37], charts.Axis(kind="share"))
    assert top == pytest.approx(0.4)
    assert ticks == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])


# --- the period ------------------------------------------------------------------------------


def test_the_period_is_one_of_the_offered_ones_else_the_default_with_a_note():
    assert period_parse(None) == (7, None)
    assert period_parse("") == (7, None)
    for days in (1, 7, 30, 90):
        assert period_parse(str(days)) == (days, None)
    for raw in ("5", "0", "-7", "abc", "7.0", "1e9", "９０"):
        days, note = period_parse(raw)
        assert days == 7
        assert note.startswith(f"“{raw}” is not a period this page offers (1, 7, 30 or 90 days)")
    days, note = period_parse("x" * 500)
    assert days == 7
    assert len(note) < 200


def test_buckets_are_hours_for_a_day_and_days_otherwise(settings):
    settings.DRIFT_REFERENCE_DAYS = None
    now = timezone.now().replace(hour=15, minute=20, second=5, microsecond=0)
    day = period_for(1, now=now)
    assert (day.unit, len(day.starts)) == ("hour", 24)
    assert day.starts[-1] == now.replace(minute=0, second=0)
    assert day.starts[0] == now.replace(minute=0, second=0) - timedelta(hours=23)
    assert day.ends[-1] == now
    assert day.ends[0] == day.starts[1]
    week = period_for(7, now=now)
    midnight = now.replace(hour=0, minute=0, second=0)
    assert (week.unit, len(week.starts)) == ("day", 7)
    assert week.starts == tuple(midnight - timedelta(days=6 - i) for i in range(7))
    # the reference window is the same length, just before
    assert week.reference_end == week.start
    assert week.reference_start == week.start - (now - week.start)
    settings.DRIFT_REFERENCE_DAYS = 28
    assert period_for(7, now=now).reference_start == week.start - timedelta(days=28)
    assert len(period_for(90, now=now).starts) == 90


@pytest.mark.django_db
def test_a_bad_period_shows_the_default_with_a_note_and_never_fails(qa_lead):
    for query in ("?days=abc", "?days=5", "?days=-1", "?days=99999999999999999999"):
        html = page(qa_lead, query)
        assert 'id="period-note"' in html
        assert 'aria-current="page">7 days</a>' in html
    html = page(qa_lead, "?days=<b>x</b>")
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in text_of(html, "period-note")
    html = page(qa_lead, "?days=30")
    assert 'id="period-note"' not in html
    assert 'aria-current="page">30 days</a>' in html


# --- queue depth and SLA ---------------------------------------------------------------------


@pytest.mark.django_db
def test_sla_attainment_is_the_share_of_cases_people_decided_by_their_deadline(qa_lead, moderator):
    cases = open_cases(0.6, 0.6, 0.6, 0.6)
    late = cases[3]
    Case.objects.filter(pk=late.pk).update(sla_due_at=timezone.now() - timedelta(minutes=5))
    open_cases(0.97)  # an automatic removal: no person, no SLA
    moderate_each(moderator, {c.pk: VIOLATION for c in cases})

    week = period_for(7)
    sla = sla_attainment(week)
    assert (sla.total.hits, sla.total.n) == (3, 4)
    assert [(b.hits, b.n) for b in sla.buckets] == [(0, 0)] * 6 + [(3, 4)]
    assert sla.total.rate == 0.75
    html = page(qa_lead)
    assert text_of(html, "sla-rate") == "75.0%"
    assert "3 of 4 cases decided by their deadline" in html
    assert "75.0% (3 of 4)" in html  # the chart's table


@pytest.mark.django_db
def test_no_decisions_in_the_period_says_so(qa_lead):
    html = page(qa_lead)
    assert "No case was decided by a moderator in this period." in html
    assert "No decisions were made in this period." in html
    assert "The detection tier sent no flag in this period" in html
    assert "No case or appeal was waiting at any point in this period." in html


@pytest.mark.django_db
def test_queue_depth_is_reconstructed_at_each_bucket_end(
    moderator, marketplace_client, appeals_staff
):
    now = timezone.now()
    week = period_for(7, now=now)
    s = week.starts
    waiting_long, decided_mid, decided_before, escalated, appealed_case = open_cases(
        0.6, 0.6, 0.6, 0.995, 0.97
    )
    (monitored,) = open_cases(0.4)
    auto = Decision.objects.get(case=appealed_case)
    assert (monitored.state, escalated.queue_kind) == ("closed", "escalation")

    def place(case, created, decided=None, state=None):
        Case.objects.filter(pk=case.pk).update(
            created_at=created, decided_at=decided, **({"state": state} if state else {})
        )

    place(waiting_long, s[0] - timedelta(days=2))  # waiting through the whole period
    place(decided_mid, s[1] + timedelta(hours=1), s[3] + timedelta(hours=1), "decided")
    place(decided_before, s[0] - timedelta(days=5), s[0] - timedelta(days=4), "decided")
    place(escalated, s[4] + timedelta(hours=1))
    place(monitored, s[0] - timedelta(days=1))  # closed by the ladder: never waited
    place(appealed_case, s[0] - timedelta(days=1), s[0] - timedelta(days=1))  # automatic

    appeal_id = appeal(marketplace_client, auto)
    decide(appeals_staff, appeal_id, "uphold")
    Appeal.objects.filter(pk=appeal_id).update(
        received_at=s[2] + timedelta(hours=1), decided_at=s[5] + timedelta(hours=1)
    )

    depth = queue_depth(week)
    # ends: s[1] … s[6], now
    assert depth.review == [1, 2, 2, 1, 1, 1, 1]
    assert depth.escalation == [0, 0, 0, 0, 1, 1, 1]
    assert depth.appeals == [0, 0, 1, 1, 1, 0, 0]

    day = period_for(1, now=now)
    Case.objects.filter(pk=escalated.pk).update(created_at=day.starts[21] + timedelta(minutes=1))
    assert queue_depth(day).escalation == [0] * 21 + [1, 1, 1]  # ends: starts[22], [23], now


# --- decision mix, automation ----------------------------------------------------------------


@pytest.mark.django_db
def test_decision_mix_by_source_and_policy(qa_lead, moderator):
    open_cases(0.97, 0.97)  # automatic removals, firearms
    open_cases(0.96, policy="drugs")
    human = open_cases(0.6, 0.6, policy="counterfeit")
    open_cases(0.4)  # monitor: no decision
    moderate_each(
        moderator, {human[0].pk: CLEARED, human[1].pk: {**VIOLATION, "policy": "counterfeit"}}
    )

    by_source, by_policy = decision_mix(period_for(7))
    assert by_source.series == {
        "automatic (policy ladder)": [0] * 6 + [3],
        "moderator": [0] * 6 + [2],
    }
    assert by_policy.series == {
        "firearms": [0] * 6 + [2],
        "drugs": [0] * 6 + [1],
        "counterfeit": [0] * 6 + [2],
    }
    assert by_source.total == by_policy.total == 5

    html = page(qa_lead)
    assert 'id="chart-mix-source"' in html
    assert 'id="chart-mix-policy"' in html
    assert "automatic (policy ladder): 3</title>" in html
    assert "counterfeit: 2</title>" in html


@pytest.mark.django_db
def test_auto_verified_share_and_review_reduction(qa_lead, moderator):
    for n in range(3):  # closed by automatic decisions (sellers apart: no strike adds up)
        open_cases(0.97, seller=f"seller-auto-{n}")
    human = open_cases(0.6, 0.6)
    moderate_each(moderator, {c.pk: VIOLATION for c in human})
    open_cases(0.62)  # still waiting
    open_cases(0.4, 0.1)  # monitor and allow: not routed above the monitor band

    figures = automation(period_for(7))
    assert (figures.auto_verified.total.hits, figures.auto_verified.total.n) == (3, 5)
    assert (figures.review_reduction.total.hits, figures.review_reduction.total.n) == (3, 6)
    html = page(qa_lead)
    assert text_of(html, "auto-verified") == "60.0%"
    assert text_of(html, "review-reduction") == "50.0%"


@pytest.mark.django_db
def test_llm_human_agreement(
    qa_lead, moderator, llm, eager_celery, django_capture_on_commit_callbacks
):
    def llm_case(reply: dict) -> Case:
        llm.script(Reply.content(reply))
        case = run_case(django_capture_on_commit_callbacks, score=0.8)
        assert case.llm_state == "done", case.route_reason
        return case

    agreed = llm_case(verdict(confidence=0.5))  # below llm_min_confidence: a person decides
    cleared = llm_case(verdict(decision="no_violation", action="none"))
    other_policy = llm_case(verdict(policy="drugs"))
    unsure = llm_case(verdict(decision="uncertain", action="none", evidence=[]))
    verified = llm_case(verdict(confidence=0.9))  # actioned by the LLM: no person
    assert verified.state == "closed"
    moderate_each(
        moderator,
        {
            agreed.pk: VIOLATION,
            cleared.pk: VIOLATION,
            other_policy.pk: VIOLATION,
            unsure.pk: CLEARED,
        },
    )
    figures = llm_agreement(period_for(7))
    assert (figures.over_time.total.hits, figures.over_time.total.n) == (1, 3)
    assert figures.uncertain == 1
    assert {k: (v.hits, v.n) for k, v in figures.per_policy.items()} == {"firearms": (1, 3)}
    html = page(qa_lead)
    assert text_of(html, "llm-agreement") == "33.3%"
    assert "1 more where the LLM was uncertain" in html


@pytest.mark.django_db
def test_appeal_and_overturn_rates_of_the_periods_restricting_decisions(
    qa_lead, marketplace_client, appeals_staff
):
    removals = []
    for n in range(4):
        (case,) = open_cases(0.97, seller=f"seller-ap-{n}")
        removals.append(Decision.objects.get(case=case))
    decide(appeals_staff, appeal(marketplace_client, removals[0]), "overturn")
    appeal(marketplace_client, removals[1])  # waiting
    html = page(qa_lead)
    assert text_of(html, "appeal-rate") == "50.0%"
    assert "2 of 4 restricting decisions appealed" in html
    assert text_of(html, "overturn-rate") == "100.0%"
    assert "1 of 1 decided appeals overturned" in html


# --- score distributions ---------------------------------------------------------------------


@pytest.mark.django_db
def test_score_histograms_against_the_reference_window_with_psi(settings, qa_lead):
    settings.DRIFT_REFERENCE_DAYS = 7
    week = period_for(7)  # its start is midnight; its end is now, so ask again after ingest

    def emitted(cases, at):
        DetectionEvent.objects.filter(case__in=cases).update(emitted_at=at)

    emitted(open_cases(0.55, 0.65), week.start - timedelta(days=1))
    emitted(open_cases(0.15), week.reference_start - timedelta(days=1))  # before the reference
    open_cases(0.55, 0.85)
    open_cases(0.05, 0.95, sample=True)  # the random sample of unflagged listings: not flags
    open_cases(1.0, policy="drugs", model_version="2027.1.0")  # a new version: no reference

    found = {(d.policy, d.model_version): d for d in score_distributions(period_for(7))}
    assert set(found) == {("firearms", "2026.11.1"), ("drugs", "2027.1.0")}
    firearms = found[("firearms", "2026.11.1")]
    assert firearms.recent == [0, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    assert firearms.reference == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    # bins 5 agree; bins 6 and 8 hold half of one window and nothing (floored) of the other
    expected = 2 * (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert firearms.psi == pytest.approx(expected)
    assert firearms.band == "significant shift"
    drugs = found[("drugs", "2027.1.0")]
    assert drugs.recent == [0] * (SCORE_BINS - 1) + [1]
    assert drugs.psi is None
    assert drugs.band == "no reference"

    html = page(qa_lead)
    assert f"PSI {expected:.3f} (significant shift)" in html
    assert 'data-policy="drugs" data-model-version="2027.1.0"' in html
    assert "no reference data" in html


def test_psi_of_identical_distributions_is_zero():
    same = [3, 0, 5, 2, 0, 0, 1, 0, 0, 9]
    assert dashboard.population_stability_index(same, [2 * c for c in same]) == 0
    assert dashboard.population_stability_index([0] * 10, same) is None


# --- drift alarms ----------------------------------------------------------------------------


def _alarm(**kw) -> DriftAlarm:
    now = timezone.now()
    fields = {
        "policy": "firearms",
        "model_version": "2026.11.1",
        "test": DriftAlarm.Test.PSI,
        "direction": "shift",
        "severity": DriftAlarm.Severity.ALARM,
        "statistic": 0.31,
        "threshold": 0.25,
        "recent_start": now - timedelta(days=1),
        "recent_end": now,
        "reference_start": now - timedelta(days=8),
        "reference_end": now - timedelta(days=1),
        "recent_count": 120,
        "reference_count": 800,
        **kw,
    }
    return DriftAlarm.objects.create(**fields)


def text_without_tags(html: str, element_id: str) -> str:
    match = re.search(rf'<(\w+) [^>]*id="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, element_id
    return " ".join(re.sub(r"<[^>]+>", "", match.group(2)).split())


def _at(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"


@pytest.mark.django_db
def test_open_drift_alarms_and_the_honest_empty_states(policy_admin):
    html = page(policy_admin)
    assert text_without_tags(html, "drift-runs") == "Drift checks have not run yet."
    assert text_of(html, "drift-empty") == "No open drift alarms: no check has run to raise one."

    # a real run, on no events: zero checks, and it says so
    drift.drift_check()
    run = DriftCheckRun.objects.get()
    html = page(policy_admin)
    assert text_without_tags(html, "drift-runs") == (
        f"Last check at {_at(run.finished_at)}: 0 checks, 0 without enough data; "
        "alarms raised 0, updated 0, resolved 0."
    )
    assert text_of(html, "drift-empty") == "No open drift alarms."

    finished = timezone.now() - timedelta(hours=2)
    DriftCheckRun.objects.create(
        ran_at=finished - timedelta(seconds=40),
        finished_at=finished,
        checks=6,
        not_enough_data=2,
        raised=1,
        resolved=1,
    )
    DriftCheckRun.objects.filter(pk=run.pk).update(ran_at=finished - timedelta(hours=1))
    html = page(policy_admin)
    assert text_without_tags(html, "drift-runs") == (
        f"Last check at {_at(finished)}: 6 checks, 2 without enough data; "
        "alarms raised 1, updated 0, resolved 1."
    )

    # a newer run that failed, then one that has not finished: the last good one still shows
    failed_at = timezone.now() - timedelta(hours=1)
    failed = DriftCheckRun.objects.create(
        ran_at=failed_at, finished_at=failed_at, error="OperationalError: the database is gone"
    )
    html = page(policy_admin)
    assert text_without_tags(html, "drift-runs") == (
        f"Last check at {_at(finished)}: 6 checks, 2 without enough data; "
        "alarms raised 1, updated 0, resolved 1. "
        f"The check started at {_at(failed_at)} failed: OperationalError: the database is gone"
    )
    failed.delete()
    unfinished = DriftCheckRun.objects.create()
    html = page(policy_admin)
    assert text_without_tags(html, "drift-run-unfinished") == (
        f"A check started at {_at(unfinished.ran_at)} has not finished (it is running, or it "
        "stopped before it could record)."
    )
    DriftCheckRun.objects.exclude(pk=unfinished.pk).delete()
    html = page(policy_admin)
    assert text_without_tags(html, "drift-runs").startswith(
        "No drift check has finished without an error yet. A check started at"
    )
    assert text_of(html, "drift-empty") == "No open drift alarms."

    _alarm(resolved_at=timezone.now(), policy="drugs")
    open_alarm = _alarm(test=DriftAlarm.Test.FLAG_RATE, direction="rise", p_value=0.0004)
    html = page(policy_admin)
    assert 'id="drift-empty"' not in html
    assert 'id="drift-runs"' in html  # beside the open alarms
    rows = re.findall(r'data-alarm="(\d+)"', html)
    assert rows == [str(open_alarm.pk)]
    row = html[html.index(f'data-alarm="{open_alarm.pk}"') :]
    row = row[: row.index("</tr>")]
    for shown in ("firearms", "flag rate", "alarm", "rise", "0.310", "0.0004", "120 / 800"):
        assert shown in row, shown


@pytest.mark.django_db
def test_a_hostile_model_version_is_escaped_everywhere(qa_lead):
    open_cases(0.6, 0.7, model_version=HOSTILE_VERSION)
    _alarm(model_version=HOSTILE_VERSION)
    DriftCheckRun.objects.create(error=f"ValueError: {HOSTILE_VERSION}")
    html = page(qa_lead)
    assert HOSTILE_VERSION not in html
    assert "<script" not in html
    escaped = "&lt;script&gt;alert(&quot;v&quot;)&lt;/script&gt;"
    assert html.count(escaped) >= 5  # heading, data attribute, SVG title, alarm row, run error


# --- who may see it --------------------------------------------------------------------------


@pytest.mark.django_db
def test_only_qa_leads_and_policy_admins_see_the_dashboard(
    qa_lead, policy_admin, moderator, appeals_staff, outsider
):
    open_cases(0.6, 0.97)
    before = snapshot()
    assert Client().get("/dashboard/").status_code == 302
    for user in (moderator, appeals_staff, outsider):
        client = Client()
        client.force_login(user)
        assert client.get("/dashboard/").status_code == 403, user.username
        assert client.post("/dashboard/").status_code == 405
        assert 'id="nav-dashboard"' not in client.get("/queues/").content.decode()
    assert snapshot() == before
    for user in (qa_lead, policy_admin):
        html = page(user)
        assert 'id="nav-dashboard"' in html
        assert 'id="chart-queue-depth"' in html


# --- the cost --------------------------------------------------------------------------------


def _queries(user, query: str) -> int:
    client = Client()
    client.force_login(user)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/dashboard/" + query).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.django_db
def test_the_number_of_queries_does_not_grow_with_the_data(
    qa_lead, moderator, django_assert_max_num_queries
):
    open_cases(0.6, 0.97)
    small = _queries(qa_lead, "?days=90")
    for version in ("2026.12.0", "2027.1.0", "2027.2.0"):
        for policy in ("firearms", "drugs", "counterfeit"):
            open_cases(0.3, 0.55, 0.97, 0.999, policy=policy, model_version=version)
    moderate_each(moderator, {c.pk: VIOLATION for c in open_cases(0.6, 0.6, 0.6)})
    _alarm()
    assert _queries(qa_lead, "?days=90") == small
    client = Client()
    client.force_login(qa_lead)
    with django_assert_max_num_queries(25):
        assert client.get("/dashboard/?days=1").status_code == 200
