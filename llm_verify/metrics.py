"""Read at scrape time: whether the LLM endpoint's circuit breaker is open (its state in Redis,
shared by every worker). Each verification's outcome, latency, tokens and cost are recorded
where a verdict is obtained (llm_verify.services)."""

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from llm_verify import services


def collect() -> Iterable[Metric]:
    gauge = GaugeMetricFamily(
        "portal_llm_breaker_open",
        "1 while the LLM endpoint's circuit breaker is open or half-open (waiting for a probe "
        "to succeed); 0 when it is closed or no LLM is configured.",
    )
    state = services.client().breaker.state() if services.configured() else "closed"
    gauge.add_metric([], 0.0 if state == "closed" else 1.0)
    yield gauge
