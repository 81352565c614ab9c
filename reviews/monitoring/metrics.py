"""Open drift alarms as Prometheus gauges, read from the database when `/metrics` is scraped.

`portal_drift_alarm{policy, model_version, test, severity}` is 1 for every open alarm (the alert
rules fire on it); `portal_drift_statistic{policy, model_version, test}` is the open alarm's
latest statistic (PSI, or the recent flag rate over the reference's). Labels are policy codes,
model versions and closed sets: bounded. `portal_drift_last_check_timestamp_seconds` is when the
last drift check run that did not fail finished (Unix time; no sample before the first one), for
the alert that the checks have stopped running.
"""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from reviews.monitoring.models import DriftAlarm, DriftCheckRun


def drift_collect() -> Iterator[Metric]:
    alarm = GaugeMetricFamily(
        "portal_drift_alarm",
        "1 for each open drift alarm, by policy, model version, test (psi, flag_rate) and "
        "severity (warning, alarm).",
        labels=["policy", "model_version", "test", "severity"],
    )
    statistic = GaugeMetricFamily(
        "portal_drift_statistic",
        "The latest statistic of each open drift alarm: PSI for test psi, the recent flag rate "
        "divided by the reference window's for test flag_rate.",
        labels=["policy", "model_version", "test"],
    )
    rows = DriftAlarm.objects.filter(resolved_at__isnull=True).values_list(
        "policy", "model_version", "test", "severity", "statistic"
    )
    for policy, model_version, test, severity, value in rows.order_by("policy", "model_version"):
        alarm.add_metric([policy, model_version, test, severity], 1)
        statistic.add_metric([policy, model_version, test], value)
    yield alarm
    yield statistic
    last_check = GaugeMetricFamily(
        "portal_drift_last_check_timestamp_seconds",
        "Unix time at which the last drift check run that did not fail finished; no sample "
        "before the first.",
    )
    finished = (
        DriftCheckRun.objects.filter(finished_at__isnull=False, error="")
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    if finished is not None:
        last_check.add_metric([], finished.timestamp())
    yield last_check
