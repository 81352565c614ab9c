"""Drift alarms on PostgreSQL: streams ingested through the real ingest path, checked, stored,
alerted to a real receiver (verified with the independent `standardwebhooks` package) and
scraped from `/metrics`.

The windows in these tests are the defaults but for a 4-day reference (`DRIFT_REFERENCE_DAYS`),
so a stream with the same flag rate in both windows needs 4 reference events per recent one.
Streams are placed in time by `emitted_at`, evenly over each window, and the checks run with
`now` an hour ago, so every event is in the past.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from reviews.cases.intake import detections_ingest
from reviews.monitoring import drift
from reviews.monitoring.alerts import alerts_deliver
from reviews.monitoring.metrics import drift_collect
from reviews.monitoring.models import DriftAlarm, DriftCheckRun
from reviews.monitoring.tasks import drift_check_task
from tests import factories as f
from tests.reviews.helpers import receiver_serving

SECRET = "whsec_" + base64.b64encode(bytes(range(40, 72))).decode()
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
DAY = timedelta(days=1)
VERSION = "2026.11.1"
Alarm = DriftAlarm


@pytest.fixture(autouse=True)
def _windows(settings):
    settings.DRIFT_RECENT_HOURS = 24
    settings.DRIFT_REFERENCE_DAYS = 4
    settings.DRIFT_MIN_REFERENCE_EVENTS = 1000
    settings.DRIFT_MIN_RECENT_EVENTS = 300
    settings.DRIFT_MIN_RATE_EVENTS = 200
    settings.DRIFT_KS_ALPHA = 0.001
    settings.DRIFT_FLAG_RATE_ALPHA = 0.001
    settings.ALERT_WEBHOOK_URL = None
    settings.ALERT_WEBHOOK_SECRET = None
    settings.ALERT_RETRY_SCHEDULE = (0, 0, 0)


def stream(scores, *, policy: str, start: datetime, end: datetime, version: str = VERSION):
    """Ingest one flag per score, emitted evenly over [start, end) from `start` on."""
    scores = list(scores)
    step = (end - start) / len(scores)
    events = []
    for i, score in enumerate(scores):
        event = f.event(score=float(score), policy=policy, images=[], model_version=version)
        event["emitted_at"] = (start + step * i).isoformat()
        events.append(event)
    for at in range(0, len(events), 500):
        outcomes = detections_ingest(events=events[at : at + 500], source="api")
        assert [o.status for o in outcomes] == ["accepted"] * len(outcomes[:500])


def beta(rng, a: float, b: float, n: int) -> np.ndarray:
    # Above the factory's 0.05 "scam" score, so the policy stays the event's top policy.
    return np.clip(rng.beta(a, b, n), 0.06, 1.0)


def steady(policy: str, scores_ref, scores_recent, *, now: datetime = NOW, **kw) -> None:
    stream(scores_ref, policy=policy, start=now - 5 * DAY, end=now - DAY, **kw)
    stream(scores_recent, policy=policy, start=now - DAY, end=now, **kw)


def open_alarms() -> list[tuple[str, str, str, str]]:
    return sorted(
        Alarm.objects.filter(resolved_at__isnull=True).values_list(
            "policy", "test", "direction", "severity"
        )
    )


def by_check(results) -> dict[tuple[str, str], drift.CheckResult]:
    return {(r.policy, r.test): r for r in results}


# --- the statistics, against hand-computed values ------------------------------------------------


def test_psi_of_hand_computed_shares():
    # Shares 0.5/0.5 against 0.9/0.1: 0.4 ln(1.8) + 0.4 ln(5).
    assert drift.psi(np.array([50, 50]), np.array([90, 10])) == pytest.approx(
        0.4 * math.log(1.8) + 0.4 * math.log(5), rel=1e-12
    )
    assert drift.psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == 0.0
    # An empty reference bin counts as EPSILON: (0.5 - 1) ln(0.5) + (0.5 - 1e-4) ln(0.5 / 1e-4).
    assert drift.psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(
        -0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4), rel=1e-12
    )
    assert drift.psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(4.6043, abs=1e-4)


def test_binomial_tails_of_hand_computed_cases_and_scipy():
    # Four recent flags, none in a reference as long: Binomial(4, 1/2), P(X >= 4) = 1/16.
    rise, fall = drift.rate_tails(
        recent_count=4, reference_count=0, recent_hours=24, reference_hours=24
    )
    assert (rise, fall) == (pytest.approx(1 / 16, rel=1e-12), pytest.approx(1.0))
    # No recent flag after 14 a day for 14 days: P(X <= 0) = (14/15)^14.
    rise, fall = drift.rate_tails(
        recent_count=0, reference_count=14, recent_hours=24, reference_hours=14 * 24
    )
    assert fall == pytest.approx((14 / 15) ** 14, rel=1e-12)
    assert fall == pytest.approx(0.380, abs=1e-3)
    assert rise == 1.0
    for k, n, p in [(200, 600, 0.2), (100, 1300, 0.2), (37, 40, 0.5), (3, 5000, 0.01)]:
        upper, lower = drift.binomial_tails(k, n, p)
        assert upper == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-7)
        assert lower == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-7)
    # A long reference makes it the Poisson test against the reference rate.
    upper, lower = drift.rate_tails(
        recent_count=30, reference_count=20_000_000, recent_hours=1, reference_hours=1_000_000
    )
    assert upper == pytest.approx(stats.poisson.sf(29, 20), rel=1e-4)
    assert lower == pytest.approx(stats.poisson.cdf(30, 20), rel=1e-4)


def test_kolmogorov_smirnov_by_hand_and_against_scipy():
    # Q(1) = 2 (e^-2 - e^-8 + e^-18 - ...) = 0.26999967.
    assert drift.kolmogorov_sf(1.0) == pytest.approx(0.26999967, abs=1e-8)
    for lam in (0.3, 0.5, 0.8, 1.2, 2.0, 3.5):
        assert drift.kolmogorov_sf(lam) == pytest.approx(stats.kstwobign.sf(lam), rel=1e-9)
    # Counts on a grid: CDFs 0.5/1 against 0.2/1 differ by 0.3 at most.
    d, p = drift.ks_two_sample(np.array([50, 50]), np.array([20, 80]))
    assert d == pytest.approx(0.3)
    en = math.sqrt(100 * 100 / 200)
    assert p == pytest.approx(drift.kolmogorov_sf((en + 0.12 + 0.11 / en) * 0.3))
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 1000, 3000), rng.integers(100, 1000, 800)
    d, _ = drift.ks_two_sample(np.bincount(a, minlength=1000), np.bincount(b, minlength=1000))
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


# --- the score distribution ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_shifted_score_stream_raises_the_psi_alarm_and_an_unshifted_one_does_not():
    """Same flag rate everywhere (2000 in 4 days, 500 in the last day). Firearms' recent scores
    move from Beta(6, 3) to Beta(3, 3): in 5000 simulated draws (these functions, this grid) PSI
    was never below 0.63 and the KS p-value never above 1e-32. Drugs stays on Beta(6, 3): in
    20 000 simulated draws PSI reached 0.1 once, never together with KS p < 0.001 / 2, so the
    chance that it raises anything is well below 1e-4; its flag rate has p near 0.5 by
    construction."""
    rng = np.random.default_rng(20261203)
    steady("firearms", beta(rng, 6, 3, 2000), beta(rng, 3, 3, 500))
    steady("drugs", beta(rng, 6, 3, 2000), beta(rng, 6, 3, 500))

    results = by_check(drift.drift_check(now=NOW))

    assert open_alarms() == [("firearms", "psi", "shift", "alarm")]
    alarm = Alarm.objects.get()
    assert alarm.statistic > 0.5
    assert alarm.statistic == pytest.approx(results["firearms", "psi"].statistic)
    assert alarm.p_value < 1e-20
    assert alarm.threshold == drift.PSI_ALARM
    assert (alarm.recent_count, alarm.reference_count) == (500, 2000)
    assert (alarm.recent_start, alarm.recent_end) == (NOW - DAY, NOW)
    assert (alarm.reference_start, alarm.reference_end) == (NOW - 5 * DAY, NOW - DAY)
    assert sum(alarm.detail["recent_counts"]) == 500
    assert sum(alarm.detail["reference_counts"]) == 2000
    assert alarm.detail["recent_mean_score"] == pytest.approx(0.5, abs=0.03)
    assert alarm.detail["reference_mean_score"] == pytest.approx(6 / 9, abs=0.02)
    assert alarm.detail["psi_checks"] == 2
    assert alarm.detail["ks_alpha_per_test"] == 0.001 / 2
    assert alarm.alert_state == Alarm.AlertState.NOT_CONFIGURED
    assert alarm.alert_event == "drift_alarm.raised"
    assert results["drugs", "psi"].outcome == "pass"
    assert results["drugs", "psi"].statistic < 0.1
    assert results["drugs", "flag_rate"].outcome == "pass"
    assert results["firearms", "flag_rate"].outcome == "pass"
    assert results["firearms", "flag_rate"].statistic == pytest.approx(1.0)
    assert [r.recorded for r in results.values()] == ["", "", "opened", ""]


@pytest.mark.django_db
def test_only_unshifted_streams_raise_nothing():
    rng = np.random.default_rng(7)
    for policy in ("firearms", "drugs", "counterfeit"):
        steady(policy, beta(rng, 6, 3, 2000), beta(rng, 6, 3, 500))

    results = drift.drift_check(now=NOW)

    assert sorted({r.outcome for r in results}) == ["pass"]
    assert len(results) == 6
    assert not Alarm.objects.exists()


@pytest.mark.django_db
def test_a_warning_becomes_an_alarm_and_resolves_when_scores_go_back(settings, receiver):
    """Deterministic scores in two bins: the reference half 0.64 and half 0.76. A recent 70/30
    split is PSI 0.2 ln 1.4 + 0.2 ln(5/3) = 0.1695 (a warning); 85/15 is 0.6071 (an alarm)."""
    settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET = receiver.url, SECRET
    start = NOW - 5 * DAY
    steady("firearms", [0.64, 0.76] * 1000, [0.64] * 350 + [0.76] * 150, now=start)

    drift.drift_check(now=start)
    assert alerts_deliver() == {"configured": True, "delivered": 1}
    alarm = Alarm.objects.get()
    assert (alarm.severity, alarm.threshold) == ("warning", 0.1)
    assert alarm.statistic == pytest.approx(0.2 * math.log(1.4) + 0.2 * math.log(5 / 3))
    assert alarm.detail["recent_counts"] == [0] * 6 + [350, 150, 0, 0]
    assert alarm.detail["contributions"][6] == pytest.approx(0.2 * math.log(1.4), abs=1e-6)

    # Late arrivals in both windows, at the same rate: the recent window is now 850/150.
    steady("firearms", [0.64, 0.76] * 1000, [0.64] * 500, now=start)
    results = by_check(drift.drift_check(now=start))
    assert alerts_deliver() == {"configured": True, "delivered": 1}
    alarm.refresh_from_db()
    assert results["firearms", "psi"].recorded == "escalated"
    assert results["firearms", "flag_rate"].outcome == "pass"
    assert (alarm.severity, alarm.threshold) == ("alarm", 0.25)
    assert alarm.statistic == pytest.approx(0.35 * math.log(1.7) + 0.35 * math.log(0.5 / 0.15))
    assert (alarm.recent_count, alarm.reference_count) == (1000, 4000)

    # Five days on, at the same rate and back to the reference mix all along: both windows
    # hold only the new days, split exactly 50/50.
    stream([0.64, 0.76] * 2500, policy="firearms", start=start, end=NOW)
    results = by_check(drift.drift_check(now=NOW))
    assert alerts_deliver() == {"configured": True, "delivered": 1}
    alarm.refresh_from_db()
    assert results["firearms", "psi"].recorded == "resolved"
    assert alarm.resolved_at == NOW
    assert alarm.detail["resolved_by"]["statistic"] == pytest.approx(0.0, abs=1e-12)
    assert open_alarms() == []
    types = [json.loads(r.body)["type"] for r in receiver.requests]
    assert types == ["drift_alarm.raised", "drift_alarm.escalated", "drift_alarm.resolved"]
    assert [r.data["severity"] for r in receiver.requests] == ["warning", "alarm", "alarm"]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        f"msg_drift_alarm_{alarm.pk}_{event}" for event in ("raised", "escalated", "resolved")
    ]
    assert all(r.verified for r in receiver.requests)


# --- the flag rate -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_flag_rate_rise_and_a_fall_raise_alarms():
    """Counterfeit: 100 flags a day for 4 days, then 200 in a day (expected 100). Stolen goods:
    300 a day, then 100. Two checks, four one-sided tests: alpha 0.001 / 4 each."""
    rng = np.random.default_rng(11)
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200))
    steady("stolen_goods", beta(rng, 6, 3, 1200), beta(rng, 6, 3, 100))

    results = by_check(drift.drift_check(now=NOW))

    assert open_alarms() == [
        ("counterfeit", "flag_rate", "rise", "alarm"),
        ("stolen_goods", "flag_rate", "fall", "alarm"),
    ]
    rise = Alarm.objects.get(policy="counterfeit")
    # Given 600 flags, 24 h of 120 h: Binomial(600, 0.2), P(X >= 200).
    assert rise.p_value == pytest.approx(stats.binom.sf(199, 600, 0.2), rel=1e-7)
    assert rise.statistic == pytest.approx(2.0)
    assert rise.threshold == pytest.approx(0.001 / 4)
    assert rise.detail["expected_recent"] == pytest.approx(100.0)
    assert rise.detail["reference_hours"] == 96.0
    fall = Alarm.objects.get(policy="stolen_goods")
    assert fall.p_value == pytest.approx(stats.binom.cdf(100, 1300, 0.2), rel=1e-7)
    assert fall.statistic == pytest.approx(1 / 3)
    assert (fall.recent_count, fall.reference_count) == (100, 1200)
    # Too few events for the score distribution, and it says why.
    assert results["counterfeit", "psi"].outcome == "not_enough_data"
    assert results["counterfeit", "psi"].reason == "400 reference events; the check needs 1000"
    assert results["stolen_goods", "psi"].reason == "100 recent events; the check needs 300"


@pytest.mark.django_db
def test_a_rise_resolves_when_the_rate_goes_back_and_the_alert_is_delivered(settings, receiver):
    settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET = receiver.url, SECRET
    rng = np.random.default_rng(5)
    start = NOW - DAY
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200), now=start)
    sent_before = scrape_value("portal_alerts_sent_total", outcome="delivered")

    assert [r.recorded for r in drift.drift_check(now=start)] == ["", "opened"]
    assert alerts_deliver() == {"configured": True, "delivered": 1}
    alarm = Alarm.objects.get()
    assert (alarm.alert_state, alarm.alert_attempts, alarm.alert_last_error) == ("delivered", 1, "")
    (request,) = receiver.requests
    assert request.verified
    assert request.headers["webhook-id"] == f"msg_drift_alarm_{alarm.pk}_raised"
    body = json.loads(request.body)
    assert body["type"] == "drift_alarm.raised"
    assert body["data"]["alarm_id"] == alarm.pk
    assert body["data"]["policy"] == "counterfeit"
    assert body["data"]["model_version"] == VERSION
    assert (body["data"]["test"], body["data"]["direction"]) == ("flag_rate", "rise")
    assert body["data"]["p_value"] == alarm.p_value
    assert body["data"]["recent_window"] == [(start - DAY).isoformat(), start.isoformat()]
    assert body["data"]["resolved_at"] is None
    assert scrape_value("portal_alerts_sent_total", outcome="delivered") == sent_before + 1

    # A day on at 100 a day again: 500 reference flags in 96 h, 100 recent; P(X <= 100) for
    # Binomial(600, 0.2) is about 0.04, far from 0.001 / 2. The receiver is down at first.
    later = NOW
    stream(beta(rng, 6, 3, 100), policy="counterfeit", start=start, end=later)
    receiver.status = 503
    assert [r.recorded for r in drift.drift_check(now=later)] == ["", "resolved"]
    failed_before = scrape_value("portal_alerts_sent_total", outcome="failed")
    assert alerts_deliver() == {"configured": True, "retrying": 1}
    alarm.refresh_from_db()
    assert alarm.resolved_at == later
    assert (alarm.alert_event, alarm.alert_state) == ("drift_alarm.resolved", "pending")
    assert (alarm.alert_attempts, alarm.alert_last_error) == (1, "HTTP 503")
    assert scrape_value("portal_alerts_sent_total", outcome="failed") == failed_before + 1

    receiver.status = 204
    assert alerts_deliver() == {"configured": True, "delivered": 1}
    alarm.refresh_from_db()
    assert (alarm.alert_state, alarm.alert_attempts, alarm.alert_last_error) == ("delivered", 2, "")
    retried = receiver.requests[1:]
    assert [r.headers["webhook-id"] for r in retried] == [
        f"msg_drift_alarm_{alarm.pk}_resolved"
    ] * 2
    assert all(r.verified for r in retried)
    assert retried[1].data["resolved_at"] == later.isoformat()
    assert alerts_deliver() == {"configured": True}  # nothing left to send


@pytest.mark.django_db
def test_an_alert_fails_after_its_schedule_and_keeps_its_error(settings, receiver):
    settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET = receiver.url, SECRET
    settings.ALERT_RETRY_SCHEDULE = (0, 0)
    receiver.status = 500
    rng = np.random.default_rng(5)
    steady("stolen_goods", beta(rng, 6, 3, 1200), beta(rng, 6, 3, 100))
    drift.drift_check(now=NOW)

    assert alerts_deliver() == {"configured": True, "retrying": 1}
    assert alerts_deliver() == {"configured": True, "failed": 1}
    alarm = Alarm.objects.get()
    assert (alarm.alert_state, alarm.alert_attempts) == ("failed", 2)
    assert alarm.alert_last_error == "HTTP 500"
    assert alarm.alert_next_attempt_at is None
    assert len(receiver.requests) == 2
    assert alerts_deliver() == {"configured": True}


@pytest.mark.django_db
def test_a_rollout_raises_no_alarm_for_either_version():
    """The old version stops emitting (not live: no fall alarm); the new one has no history
    yet (its reference is shorter than the recent window)."""
    rng = np.random.default_rng(9)
    stream(beta(rng, 6, 3, 1200), policy="firearms", start=NOW - 5 * DAY, end=NOW - DAY)
    stream(beta(rng, 6, 3, 400), policy="firearms", start=NOW - DAY, end=NOW, version="2027.1.0")

    results = {(r.model_version, r.test): r for r in drift.drift_check(now=NOW)}

    assert not Alarm.objects.exists()
    assert results[VERSION, "flag_rate"].outcome == "not_live"
    assert results[VERSION, "psi"].reason == "0 recent events; the check needs 300"
    assert results["2027.1.0", "flag_rate"].outcome == "not_enough_data"
    assert results["2027.1.0", "flag_rate"].reason == (
        "the model version's reference covers 0.0 h; the check needs 24 h"
    )


@pytest.mark.django_db
def test_random_sample_events_are_not_flags():
    rng = np.random.default_rng(13)
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 100))
    # A burst of the detection tier's random samples in the recent window is no flag-rate rise.
    samples = [f.event(score=0.3, policy="counterfeit", images=[], sample=True) for _ in range(300)]
    for i, event in enumerate(samples):
        event["emitted_at"] = (NOW - timedelta(minutes=i + 1)).isoformat()
    assert {o.status for o in detections_ingest(events=samples, source="api")} == {"accepted"}

    results = by_check(drift.drift_check(now=NOW))

    assert results["counterfeit", "flag_rate"].recent_count == 100
    assert results["counterfeit", "flag_rate"].outcome == "pass"
    assert not Alarm.objects.exists()


# --- where alarms show ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_open_alarms_are_scraped_as_metrics_until_resolved(client):
    rng = np.random.default_rng(5)
    start = NOW - DAY
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200), now=start)
    drift.drift_check(now=start)
    alarm = Alarm.objects.get()

    labels = {"policy": "counterfeit", "model_version": VERSION, "test": "flag_rate"}
    families = {family.name: family for family in drift_collect()}
    assert [(s.labels, s.value) for s in families["portal_drift_alarm"].samples] == [
        ({**labels, "severity": "alarm"}, 1.0)
    ]
    assert [(s.labels, s.value) for s in families["portal_drift_statistic"].samples] == [
        (labels, alarm.statistic)
    ]
    scraped = scrape(client)
    assert scraped["portal_drift_alarm"] == [({**labels, "severity": "alarm"}, 1.0)]
    assert scraped["portal_drift_statistic"] == [(labels, pytest.approx(2.0))]

    stream(beta(rng, 6, 3, 100), policy="counterfeit", start=start, end=NOW)
    drift.drift_check(now=NOW)
    scraped = scrape(client)
    assert scraped["portal_drift_alarm"] == []
    assert scraped["portal_drift_statistic"] == []


@pytest.mark.django_db
def test_the_command_and_the_task_check_on_the_clock():
    rng = np.random.default_rng(5)
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200), now=datetime.now(UTC))
    out = io.StringIO()
    call_command("check_drift", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "checks": 2,
        "outcomes": {"not_enough_data": 1, "alarm": 1},
        "recorded": {"opened": 1},
        "alerts": {"configured": False},
    }
    out = io.StringIO()
    call_command("check_drift", stdout=out)
    psi_line, rate_line, alerts_line = out.getvalue().splitlines()
    assert alerts_line == "alerts: ALERT_WEBHOOK_URL is not set; none sent"
    assert psi_line.split()[:4] == ["counterfeit", VERSION, "psi", "not_enough_data"]
    assert psi_line.endswith("(400 reference events; the check needs 1000)")
    assert rate_line.split()[:4] == ["counterfeit", VERSION, "flag_rate", "alarm"]
    statistic = float(re.search(r"statistic=(\S+)", rate_line).group(1))
    assert statistic == pytest.approx(2.0, abs=0.05)  # the clock has moved a little since
    assert rate_line.endswith("-> alarm updated")

    assert drift_check_task() == {  # the beat task, run in this process
        "checks": 2,
        "outcomes": {"not_enough_data": 1, "alarm": 1},
        "recorded": {"updated": 1},
        "alerts": {"configured": False},
    }
    alarm = Alarm.objects.get()
    assert (alarm.alert_state, alarm.alert_event) == ("not_configured", "drift_alarm.raised")


@pytest.mark.django_db
def test_one_open_alarm_per_check():
    rng = np.random.default_rng(5)
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200))
    first = drift.drift_check(now=NOW)
    again = drift.drift_check(now=NOW + timedelta(minutes=30))
    assert [r.recorded for r in first] == ["", "opened"]
    assert [r.recorded for r in again] == ["", "updated"]
    alarm = Alarm.objects.get()
    assert alarm.raised_at == NOW
    assert alarm.last_checked_at == NOW + timedelta(minutes=30)


# --- the runs ------------------------------------------------------------------------------------


def runs() -> list[tuple]:
    return list(
        DriftCheckRun.objects.order_by("ran_at", "id").values_list(
            "checks", "raised", "updated", "resolved", "not_enough_data", "error"
        )
    )


@pytest.mark.django_db
def test_every_run_is_recorded_with_what_it_did_and_its_windows():
    rng = np.random.default_rng(5)
    start = NOW - DAY
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200), now=start)
    before = datetime.now(UTC)
    drift.drift_check(now=start)  # the psi check lacks data; the rate doubled: an alarm opens
    after = datetime.now(UTC)
    run = DriftCheckRun.objects.get()
    assert before <= run.ran_at <= run.finished_at <= after  # the clock's, not the windows'
    assert run.windows == {
        "recent": {"start": (start - DAY).isoformat(), "end": start.isoformat()},
        "reference": {"start": (start - 5 * DAY).isoformat(), "end": (start - DAY).isoformat()},
    }
    drift.drift_check(now=start + timedelta(minutes=30))  # still failing: the alarm is updated
    stream(beta(rng, 6, 3, 100), policy="counterfeit", start=start, end=NOW)
    drift.drift_check(now=NOW)  # back to 100 a day: resolved
    drift.drift_check(now=NOW + 30 * DAY)  # nothing in either window: no check at all
    assert runs() == [
        (2, 1, 0, 0, 1, ""),
        (2, 0, 1, 0, 1, ""),
        (2, 0, 0, 1, 1, ""),
        (0, 0, 0, 0, 0, ""),
    ]
    assert Alarm.objects.get().resolved_at == NOW


@pytest.mark.django_db
def test_an_alarm_resolved_because_its_events_are_gone_counts_as_resolved():
    rng = np.random.default_rng(5)
    steady("counterfeit", beta(rng, 6, 3, 400), beta(rng, 6, 3, 200))
    drift.drift_check(now=NOW)
    assert drift.drift_check(now=NOW + 30 * DAY) == []
    assert runs() == [(2, 1, 0, 0, 1, ""), (0, 0, 0, 1, 0, "")]


@pytest.mark.django_db
def test_a_failing_run_records_its_error_and_raises_it(settings):
    settings.DRIFT_RECENT_HOURS = "24"  # a setting from the environment, not made an int
    with pytest.raises(TypeError):
        drift.drift_check()
    run = DriftCheckRun.objects.get()
    assert run.error.startswith("TypeError: ")
    assert "str" in run.error
    assert run.finished_at is not None
    assert run.windows == {}
    assert (run.checks, run.raised, run.updated, run.resolved) == (0, 0, 0, 0)


@pytest.mark.django_db
def test_runs_older_than_30_days_are_deleted_by_the_next_run_even_a_failing_one(settings):
    now = datetime.now(UTC)
    old = DriftCheckRun.objects.create(ran_at=now - timedelta(days=30, minutes=1))
    kept = DriftCheckRun.objects.create(ran_at=now - timedelta(days=29, hours=23))
    drift.drift_check()
    left = set(DriftCheckRun.objects.values_list("pk", flat=True))
    assert old.pk not in left
    assert kept.pk in left
    assert len(left) == 2

    older = DriftCheckRun.objects.create(ran_at=now - timedelta(days=31))
    settings.DRIFT_RECENT_HOURS = "24"
    with pytest.raises(TypeError):
        drift.drift_check()
    assert not DriftCheckRun.objects.filter(pk=older.pk).exists()
    assert DriftCheckRun.objects.count() == 3


@pytest.mark.django_db
def test_the_last_run_that_did_not_fail_is_scraped_as_a_timestamp(client, settings):
    name = "portal_drift_last_check_timestamp_seconds"
    assert scrape(client)[name] == []  # no run yet: no sample (the never-ran alert's case)
    drift.drift_check()
    good = DriftCheckRun.objects.get()
    assert scrape(client)[name] == [({}, good.finished_at.timestamp())]
    families = {family.name: family for family in drift_collect()}
    assert [s.value for s in families[name].samples] == [good.finished_at.timestamp()]

    settings.DRIFT_RECENT_HOURS = "24"
    with pytest.raises(TypeError):
        drift.drift_check()
    assert DriftCheckRun.objects.count() == 2
    # a failed run is not a check that ran: the timestamp stays the last good one's
    assert scrape(client)[name] == [({}, good.finished_at.timestamp())]
    # an unfinished one (the worker stopped) is not either
    DriftCheckRun.objects.create()
    assert scrape(client)[name] == [({}, good.finished_at.timestamp())]


# --- the scrape and the receiver -----------------------------------------------------------------


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    return {
        family.name: [(s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(response.content.decode())
    }


def scrape_value(sample: str, **labels) -> float:
    from django.test import Client

    for family in text_string_to_metric_families(
        Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    ):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    return 0.0


@pytest.fixture
def receiver():
    with receiver_serving(SECRET, "/hooks/alerts") as state:
        yield state
