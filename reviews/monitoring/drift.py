"""Drift checks: per policy and model version, a recent window against a reference window.

What is compared. Every stored detection event that is a flag (random `sample` events are left
out: they are not flags, and their volume follows the sampling rate) counts for its top policy
and its `model_version`, with its top score: the score its case was opened and routed with.
Windows are by `emitted_at`, the time the model scored the listing, so a replay of dead letters
or a slow ingest lands in the hours it belongs to. The recent window is the last
`DRIFT_RECENT_HOURS`; the reference window is the `DRIFT_REFERENCE_DAYS` before it, and starts
no earlier than the model version's first event in that span (a new version has a shorter
history, not an emptier one).

Two tests per policy and model version:

- **Score distribution (PSI).** Scores in 10 equal-width bins on [0, 1] (the last bin holds 1.0),
  shares of each window, an empty bin's share taken as `EPSILON`;
  PSI = sum over bins of (recent - reference) * ln(recent / reference). Warning at
  `PSI_WARNING` (0.1), alarm at `PSI_ALARM` (0.25), the usual cut-offs. PSI measures how big a
  shift is, not whether it is noise: with a few hundred events an unchanged distribution can
  reach 0.1 by chance, so a warning or an alarm also needs the two-sample Kolmogorov-Smirnov
  test (scores to 0.001) to reject "same distribution" at `DRIFT_KS_ALPHA`, Bonferroni-divided
  by the number of PSI checks in the run. Needs `DRIFT_MIN_REFERENCE_EVENTS` and
  `DRIFT_MIN_RECENT_EVENTS`.
- **Flag rate.** Flags per hour in the recent window against the reference window's rate, by
  the exact conditional test for two Poisson rates: given n = recent + reference flags, the
  recent count is Binomial(n, recent hours / all hours) when the rate has not changed, and the
  one-sided tails P(X >= recent) (a rise) and P(X <= recent) (a fall) are its p-values (for a
  long reference this is the Poisson test against the reference rate, with the reference's own
  uncertainty counted). Alarm when the smaller tail is below `DRIFT_FLAG_RATE_ALPHA`
  Bonferroni-divided by the number of one-sided tests in the run (two per check). Needs
  `DRIFT_MIN_RATE_EVENTS` in the reference and a reference at least as long as the recent
  window; a model version with no event at all in the recent window is not live (replaced, or
  the detection tier is down: other alerts cover that) and its rate is not tested, so a rollout
  does not raise a fall alarm for the version it replaces.

A check without enough data says so and changes nothing. A failing check opens an alarm (one
open per policy, model version and test), or updates the open one; a passing check resolves
it. Alarms of a model version with no events left in either window are resolved: nothing is
left to compare. Counts come from one grouped query (bins of 0.001), never from loading events.

Every run is recorded (`DriftCheckRun`: when, how many checks, what they did, or the error), so
the dashboard and `portal_drift_last_check_timestamp_seconds` can say when the checks last ran;
runs older than 30 days are deleted by the run.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, IntegerField, Max, Min, QuerySet, Value, When
from django.db.models.functions import Cast, Floor, Greatest, Least
from django.utils import timezone

from detection.models import DetectionEvent
from reviews.monitoring import alerts
from reviews.monitoring.models import DriftAlarm, DriftCheckRun

logger = logging.getLogger(__name__)

BINS = 10
FINE_BINS = 1000  # the counting grid: scores to 0.001, enough for KS; PSI bins are 100 of them
EPSILON = 1e-4  # the share an empty bin counts as (it would make ln(0) otherwise)
PSI_WARNING, PSI_ALARM = 0.1, 0.25
RECENT, REFERENCE = "recent", "reference"

Test, Severity = DriftAlarm.Test, DriftAlarm.Severity


# --- the statistics -----------------------------------------------------------------------------


def psi(reference: np.ndarray, recent: np.ndarray, *, epsilon: float = EPSILON) -> float:
    """Population stability index of two count vectors over the same bins."""
    expected = _shares(reference, epsilon)
    observed = _shares(recent, epsilon)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def _shares(counts: np.ndarray, epsilon: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    shares = counts / counts.sum()
    return np.where(shares == 0, epsilon, shares)


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution: 2 * sum_j (-1)^(j-1) exp(-2 j^2 lam^2)."""
    if lam < 0.2:  # the series converges slowly here, and the value is 1 to double precision
        return 1.0
    j = np.arange(1, 101)
    value = 2.0 * np.sum((-1.0) ** (j - 1) * np.exp(-2.0 * j**2 * lam**2))
    return float(min(1.0, max(0.0, value)))


def ks_two_sample(reference: np.ndarray, recent: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D and its asymptotic p-value (with Stephens'
    small-sample correction), from counts of both samples on the same grid of bins."""
    reference = np.asarray(reference, dtype=float)
    recent = np.asarray(recent, dtype=float)
    n, m = reference.sum(), recent.sum()
    d = float(np.max(np.abs(np.cumsum(reference) / n - np.cumsum(recent) / m)))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def _log_sum_exp(values: np.ndarray) -> float:
    top = float(np.max(values))
    return top + math.log(float(np.sum(np.exp(values - top))))


def binomial_tails(k: int, n: int, p: float) -> tuple[float, float]:
    """(P(X >= k), P(X <= k)) for X ~ Binomial(n, p), 0 <= k <= n, 0 < p < 1, summed in log
    space over the span that holds all but a negligible part of the mass."""
    sd = math.sqrt(n * p * (1 - p))
    mean = n * p
    lo = max(0, math.floor(min(k, mean) - 40 * sd - 10))
    hi = min(n, math.ceil(max(k, mean) + 40 * sd + 10))
    log_first = (
        math.lgamma(n + 1)
        - math.lgamma(lo + 1)
        - math.lgamma(n - lo + 1)
        + lo * math.log(p)
        + (n - lo) * math.log1p(-p)
    )
    i = np.arange(lo, hi, dtype=float)  # pmf(i + 1) / pmf(i) = (n - i) / (i + 1) * p / (1 - p)
    steps = np.log(n - i) - np.log(i + 1) + math.log(p) - math.log1p(-p)
    log_pmf = log_first + np.concatenate(([0.0], np.cumsum(steps)))  # for lo .. hi
    at = k - lo
    upper = math.exp(_log_sum_exp(log_pmf[at:])) if at <= hi - lo else 0.0
    lower = math.exp(_log_sum_exp(log_pmf[: at + 1])) if at >= 0 else 0.0
    # Beyond the span lies nothing a p-value of interest could notice.
    upper = 1.0 if k <= lo else min(1.0, upper)
    lower = 1.0 if k >= hi else min(1.0, lower)
    return upper, lower


def rate_tails(
    *, recent_count: int, reference_count: int, recent_hours: float, reference_hours: float
) -> tuple[float, float]:
    """One-sided p-values (rise, fall) that the recent window's flag rate differs from the
    reference window's: the conditional binomial test of two Poisson rates."""
    p = recent_hours / (recent_hours + reference_hours)
    return binomial_tails(recent_count, recent_count + reference_count, p)


# --- one run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    recent_start: datetime
    recent_end: datetime
    reference_start: datetime  # the nominal start; a check may start later (`reference_from`)

    @classmethod
    def ending(cls, now: datetime) -> Windows:
        recent_start = now - timedelta(hours=settings.DRIFT_RECENT_HOURS)
        return cls(
            recent_start=recent_start,
            recent_end=now,
            reference_start=recent_start - timedelta(days=settings.DRIFT_REFERENCE_DAYS),
        )


@dataclass
class CheckResult:
    """What one check of one policy and model version found."""

    policy: str
    model_version: str
    test: str
    # pass, warning, alarm, not_enough_data (the reason says which), not_live
    outcome: str
    reason: str = ""
    direction: str = ""
    statistic: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    recent_start: datetime | None = None
    recent_end: datetime | None = None
    reference_start: datetime | None = None
    reference_end: datetime | None = None
    recent_count: int = 0
    reference_count: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    recorded: str = ""  # opened, updated, escalated, resolved, or "" when nothing changed

    @property
    def failed(self) -> bool:
        return self.outcome in (Severity.WARNING, Severity.ALARM)


@dataclass
class _Pair:
    """The counts of one policy and model version on the 0.001 grid, per window."""

    recent: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS))
    reference: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS))


def _flags(windows: Windows) -> QuerySet[DetectionEvent]:
    return DetectionEvent.objects.filter(
        is_sample=False,
        emitted_at__gte=windows.reference_start,
        emitted_at__lt=windows.recent_end,
    )


def counts_read(
    windows: Windows,
) -> tuple[dict[tuple[str, str], _Pair], dict[str, tuple[datetime, datetime]]]:
    """Per (policy, model version): score counts on the 0.001 grid in each window; and per model
    version: its first and last event in the span."""
    fine_bin = Least(
        Greatest(Cast(Floor(F("top_score") * FINE_BINS), IntegerField()), Value(0)),
        Value(FINE_BINS - 1),
    )
    rows = (
        _flags(windows)
        .annotate(
            window=Case(
                When(emitted_at__gte=windows.recent_start, then=Value(RECENT)),
                default=Value(REFERENCE),
            ),
            bin=fine_bin,
        )
        .values_list("top_policy", "model_version", "window", "bin")
        .annotate(n=Count("id"))
        .order_by()
    )
    pairs: dict[tuple[str, str], _Pair] = {}
    for policy, version, window, bin_, n in rows:
        pair = pairs.setdefault((policy, version), _Pair())
        (pair.recent if window == RECENT else pair.reference)[bin_] += n
    versions = {
        version: (first, last)
        for version, first, last in _flags(windows)
        .values_list("model_version")
        .annotate(first=Min("emitted_at"), last=Max("emitted_at"))
        .order_by()
    }
    return pairs, versions


def _common(
    policy: str,
    version: str,
    test: str,
    windows: Windows,
    reference_from: datetime,
    counts: tuple[int, int],
) -> dict[str, Any]:
    return {
        "policy": policy,
        "model_version": version,
        "test": test,
        "recent_start": windows.recent_start,
        "recent_end": windows.recent_end,
        "reference_start": reference_from,
        "reference_end": windows.recent_start,
        "recent_count": counts[0],
        "reference_count": counts[1],
    }


def _psi_measure(common: dict[str, Any], pair: _Pair) -> CheckResult:
    recent_count, reference_count = common["recent_count"], common["reference_count"]
    if reference_count < settings.DRIFT_MIN_REFERENCE_EVENTS:
        return CheckResult(
            **common,
            outcome="not_enough_data",
            reason=f"{reference_count} reference events; "
            f"the check needs {settings.DRIFT_MIN_REFERENCE_EVENTS}",
        )
    if recent_count < settings.DRIFT_MIN_RECENT_EVENTS:
        return CheckResult(
            **common,
            outcome="not_enough_data",
            reason=f"{recent_count} recent events; "
            f"the check needs {settings.DRIFT_MIN_RECENT_EVENTS}",
        )
    step = FINE_BINS // BINS
    reference = pair.reference.reshape(BINS, step).sum(axis=1)
    recent = pair.recent.reshape(BINS, step).sum(axis=1)
    value = psi(reference, recent)
    d, ks_p = ks_two_sample(pair.reference, pair.recent)
    expected, observed = _shares(reference, EPSILON), _shares(recent, EPSILON)
    midpoints = (np.arange(FINE_BINS) + 0.5) / FINE_BINS
    detail = {
        "bins": [round(i / BINS, 2) for i in range(BINS + 1)],
        "reference_counts": [int(c) for c in reference],
        "recent_counts": [int(c) for c in recent],
        "reference_shares": [round(float(s), 6) for s in reference / reference.sum()],
        "recent_shares": [round(float(s), 6) for s in recent / recent.sum()],
        "contributions": [
            round(float(c), 6) for c in (observed - expected) * np.log(observed / expected)
        ],
        "epsilon": EPSILON,
        "reference_mean_score": round(float(midpoints @ pair.reference) / reference_count, 4),
        "recent_mean_score": round(float(midpoints @ pair.recent) / recent_count, 4),
        "ks_statistic": round(d, 6),
        "ks_p_value": ks_p,
    }
    return CheckResult(
        **common,
        outcome="measured",
        direction="shift",
        statistic=value,
        p_value=ks_p,
        detail=detail,
    )


def _psi_decide(result: CheckResult, *, tests: int) -> None:
    alpha = settings.DRIFT_KS_ALPHA / tests
    assert result.statistic is not None
    assert result.p_value is not None
    significant = result.p_value < alpha
    if significant and result.statistic >= PSI_ALARM:
        result.outcome, result.threshold = Severity.ALARM, PSI_ALARM
    elif significant and result.statistic >= PSI_WARNING:
        result.outcome, result.threshold = Severity.WARNING, PSI_WARNING
    else:
        result.outcome, result.threshold = "pass", PSI_WARNING
    result.detail.update(
        {"ks_alpha": settings.DRIFT_KS_ALPHA, "ks_alpha_per_test": alpha, "psi_checks": tests}
    )


def _rate_measure(common: dict[str, Any], *, live: bool, reference_hours: float) -> CheckResult:
    recent_count, reference_count = common["recent_count"], common["reference_count"]
    recent_hours = float(settings.DRIFT_RECENT_HOURS)
    if not live:
        return CheckResult(
            **common,
            outcome="not_live",
            reason="the model version emitted nothing in the recent window",
        )
    if reference_hours < recent_hours:
        return CheckResult(
            **common,
            outcome="not_enough_data",
            reason=f"the model version's reference covers {reference_hours:.1f} h; "
            f"the check needs {recent_hours:.0f} h",
        )
    if reference_count < settings.DRIFT_MIN_RATE_EVENTS:
        return CheckResult(
            **common,
            outcome="not_enough_data",
            reason=f"{reference_count} reference events; "
            f"the check needs {settings.DRIFT_MIN_RATE_EVENTS}",
        )
    p_rise, p_fall = rate_tails(
        recent_count=recent_count,
        reference_count=reference_count,
        recent_hours=recent_hours,
        reference_hours=reference_hours,
    )
    recent_rate = recent_count / recent_hours
    reference_rate = reference_count / reference_hours
    rise = recent_rate > reference_rate
    detail = {
        "recent_hours": recent_hours,
        "reference_hours": round(reference_hours, 4),
        "recent_rate_per_hour": round(recent_rate, 6),
        "reference_rate_per_hour": round(reference_rate, 6),
        "expected_recent": round(reference_rate * recent_hours, 4),
        "p_rise": p_rise,
        "p_fall": p_fall,
        "method": "conditional binomial test of two Poisson rates, one-sided each way",
    }
    return CheckResult(
        **common,
        outcome="measured",
        direction="rise" if rise else "fall",
        statistic=recent_rate / reference_rate,
        p_value=p_rise if rise else p_fall,
        detail=detail,
    )


def _rate_decide(result: CheckResult, *, tests: int) -> None:
    alpha = settings.DRIFT_FLAG_RATE_ALPHA / tests
    assert result.p_value is not None
    result.outcome = Severity.ALARM if result.p_value < alpha else "pass"
    result.threshold = alpha
    result.detail.update(
        {"alpha": settings.DRIFT_FLAG_RATE_ALPHA, "alpha_per_test": alpha, "one_sided_tests": tests}
    )


def checks_run(*, windows: Windows) -> list[CheckResult]:
    """Both tests for every policy and model version with events in the span (nothing stored)."""
    pairs, versions = counts_read(windows)
    results: list[CheckResult] = []
    for (policy, version), pair in sorted(pairs.items()):
        first, last = versions[version]
        reference_from = max(windows.reference_start, first)
        counts = (int(pair.recent.sum()), int(pair.reference.sum()))
        reference_hours = max(0.0, (windows.recent_start - reference_from).total_seconds() / 3600)
        for test in (Test.PSI, Test.FLAG_RATE):
            common = _common(policy, version, test, windows, reference_from, counts)
            if test == Test.PSI:
                results.append(_psi_measure(common, pair))
            else:
                live = last >= windows.recent_start
                results.append(_rate_measure(common, live=live, reference_hours=reference_hours))
    measured = [r for r in results if r.outcome == "measured"]
    psi_tests = sum(1 for r in measured if r.test == Test.PSI)
    rate_tests = 2 * sum(1 for r in measured if r.test == Test.FLAG_RATE)
    for result in measured:
        if result.test == Test.PSI:
            _psi_decide(result, tests=psi_tests)
        else:
            _rate_decide(result, tests=rate_tests)
    return results


# --- storing what the checks found --------------------------------------------------------------

_ALARM_FIELDS = (
    "direction",
    "statistic",
    "p_value",
    "threshold",
    "recent_start",
    "recent_end",
    "reference_start",
    "reference_end",
    "recent_count",
    "reference_count",
    "detail",
)


def _open(result: CheckResult) -> QuerySet[DriftAlarm]:
    return DriftAlarm.objects.filter(
        policy=result.policy,
        model_version=result.model_version,
        test=result.test,
        resolved_at__isnull=True,
    )


def result_record(result: CheckResult, *, now: datetime) -> str:
    """Open, update, escalate or resolve the check's alarm; what it did ("" for nothing)."""
    if not result.failed and result.outcome != "pass":
        return ""  # not enough data, or not live: the open alarm (if any) stays as it was
    values = {name: getattr(result, name) for name in _ALARM_FIELDS}
    with transaction.atomic():
        alarm = _open(result).select_for_update().first()
        if alarm is None and result.failed:
            try:
                with transaction.atomic():
                    alarm = DriftAlarm.objects.create(
                        policy=result.policy,
                        model_version=result.model_version,
                        test=result.test,
                        severity=result.outcome,
                        raised_at=now,
                        last_checked_at=now,
                        **values,
                        **alerts.alert_queued(alerts.RAISED, now=now),
                    )
            except IntegrityError:
                return ""  # another run opened it at the same moment; it records the same
            logger.warning(
                "drift alarm %s raised: %s %s on %s (%s) = %.4g",
                alarm.pk,
                result.outcome,
                result.test,
                result.policy,
                result.model_version,
                result.statistic,
            )
            return "opened"
        if alarm is None:
            return ""
        if result.failed:
            changes = {**values, "severity": result.outcome, "last_checked_at": now}
            done = "updated"
            # An alarm that started as a warning alerts once more when it becomes an alarm.
            if (
                alarm.severity == Severity.WARNING
                and result.outcome == Severity.ALARM
                and alarm.alert_event == alerts.RAISED
            ):
                changes.update(alerts.alert_queued(alerts.ESCALATED, now=now))
                done = "escalated"
        else:
            passed = {
                "statistic": result.statistic,
                "p_value": result.p_value,
                "recent_count": result.recent_count,
                "reference_count": result.reference_count,
                "recent_end": result.recent_end.isoformat() if result.recent_end else None,
            }
            changes = {
                "detail": {**alarm.detail, "resolved_by": passed},
                "last_checked_at": now,
                "resolved_at": now,
                **alerts.alert_queued(alerts.RESOLVED, now=now),
            }
            done = "resolved"
        DriftAlarm.objects.filter(pk=alarm.pk).update(**changes)
    if done == "resolved":
        logger.info("drift alarm %s resolved: the check passes again", alarm.pk)
    elif done == "escalated":
        logger.warning("drift alarm %s escalated from warning to alarm", alarm.pk)
    return done


def _resolve_vanished(checked: set[tuple[str, str]], *, now: datetime) -> int:
    """Resolve the open alarms of model versions with no events left in either window."""
    resolved = 0
    for alarm in DriftAlarm.objects.filter(resolved_at__isnull=True):
        if (alarm.policy, alarm.model_version) in checked:
            continue
        reason = "no events of this policy and model version in either window"
        resolved += DriftAlarm.objects.filter(pk=alarm.pk, resolved_at__isnull=True).update(
            resolved_at=now,
            last_checked_at=now,
            detail={**alarm.detail, "resolved_by": {"reason": reason}},
            **alerts.alert_queued(alerts.RESOLVED, now=now),
        )
    return resolved


def _windows_json(windows: Windows) -> dict[str, dict[str, str]]:
    return {
        RECENT: {"start": windows.recent_start.isoformat(), "end": windows.recent_end.isoformat()},
        REFERENCE: {
            "start": windows.reference_start.isoformat(),
            "end": windows.recent_start.isoformat(),
        },
    }


def runs_prune(*, now: datetime) -> int:
    """Delete the runs started more than `DriftCheckRun.RETENTION_DAYS` before `now`."""
    cutoff = now - timedelta(days=DriftCheckRun.RETENTION_DAYS)
    deleted, _ = DriftCheckRun.objects.filter(ran_at__lt=cutoff).delete()
    return deleted


def drift_check(*, now: datetime | None = None) -> list[CheckResult]:
    """Run every check on the windows ending `now` and store what they found, with one
    `DriftCheckRun` for the run (its error too, when it fails; the error is raised again).

    The run's times are the clock's, whatever `now` is: they say when the check ran, the
    windows say what it compared."""
    run = DriftCheckRun.objects.create(ran_at=timezone.now())
    try:
        runs_prune(now=run.ran_at)  # first, so that failing runs are bounded too
        now = now or run.ran_at
        windows = Windows.ending(now)
        run.windows = _windows_json(windows)
        results = checks_run(windows=windows)
        for result in results:
            result.recorded = result_record(result, now=now)
        vanished = _resolve_vanished({(r.policy, r.model_version) for r in results}, now=now)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        run.finished_at = timezone.now()
        try:
            run.save(update_fields=["windows", "error", "finished_at"])
        except Exception:
            logger.exception("drift check run %s: its error could not be stored", run.pk)
        logger.exception("drift check run %s failed", run.pk)
        raise
    recorded = Counter(r.recorded for r in results)
    run.checks = len(results)
    run.raised = recorded["opened"]
    run.updated = recorded["updated"] + recorded["escalated"]
    run.resolved = recorded["resolved"] + vanished
    run.not_enough_data = sum(1 for r in results if r.outcome == "not_enough_data")
    run.finished_at = timezone.now()
    run.save()
    return results


def summary(results: list[CheckResult]) -> dict[str, Any]:
    """Counts by outcome and by what was stored, for the task's result and the command."""
    return {
        "checks": len(results),
        "outcomes": dict(Counter(r.outcome for r in results)),
        "recorded": dict(Counter(r.recorded for r in results if r.recorded)),
    }
