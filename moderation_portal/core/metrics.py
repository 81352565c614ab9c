"""The portal's Prometheus families (prefixed `portal_`), defined once, with bounded labels.

Counters and histograms are incremented where the thing happens, in whichever process does
it (web, Celery worker, beat, management command). With `PROMETHEUS_MULTIPROC_DIR` set (the
settings set it), every process writes its values to files in that folder and a scrape of
`GET /metrics` on any web process reads them all, so one scrape sees the whole system.

Values that are a state of the database (queue depth, oldest age, dead letters waiting, the
outbox backlog, drift alarms) are not kept in any process: each app registers a scrape
collector (`register_scrape_collector`) that reads them when `/metrics` is asked.

`ENABLED` (the `METRICS_ENABLED` environment variable, on by default) turns the recording
off: instrumented code checks `metrics.ENABLED` before touching a family, so the benchmark can
measure what recording costs beside the same run without it.

Label values come from closed sets (policy codes, routes, sources, verdicts, actions, steps,
outcomes, queue slugs, task names) or from model versions, which change a few times a year;
nothing an adversary writes (listing text, seller ids, free-form errors) ever becomes a label.
"""

import os
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric

ENABLED: bool = os.environ.get("METRICS_ENABLED", "true").strip().lower() not in {
    "0",
    "false",
    "no",
    "off",
}

# Buckets in seconds: fast paths (a claim, a database write) and slow ones (an LLM call).
FAST_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SLOW_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HUMAN_SECONDS = (2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
LAG_SECONDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))  # 0.05 … 1.0

# --- ingest ----------------------------------------------------------------------------------
INGEST_EVENTS = Counter(
    "portal_ingest_events",
    "Detection events received, by where they came from, what became of them and, for a "
    "rejection, its code (accepted, duplicate, rejected, dead_lettered).",
    ["source", "outcome", "code"],
)
DETECTION_SCORE = Histogram(
    "portal_detection_score",
    "The detection tier's score of each stored event, per policy and model version "
    "(champion scores only; shadow models have their own family).",
    ["policy", "model_version"],
    buckets=SCORE_BUCKETS,
)
CHALLENGER_SCORE = Histogram(
    "portal_challenger_score",
    "Shadow (challenger) models' scores of stored events, per policy and model version.",
    ["policy", "model_version"],
    buckets=SCORE_BUCKETS,
)

# --- cases, claims, decisions ----------------------------------------------------------------
CASES_OPENED = Counter(
    "portal_cases_opened", "Cases opened, by policy and the ladder's route.", ["policy", "route"]
)
CLAIMS = Counter(
    "portal_claims",
    "Claim-next calls, by queue and outcome (claimed, empty, refused).",
    ["queue", "outcome"],
)
CLAIM_LATENCY = Histogram(
    "portal_claim_latency_seconds",
    "How long claim-next took to hand out a case (or find none), by queue.",
    ["queue"],
    buckets=FAST_SECONDS,
)
DECISIONS = Counter(
    "portal_decisions",
    "Decisions recorded, by source, verdict, action and policy.",
    ["source", "verdict", "action", "policy"],
)
TIME_ON_CASE = Histogram(
    "portal_time_on_case_seconds",
    "A moderator's time on a case before deciding, by policy and decision source.",
    ["policy", "source"],
    buckets=HUMAN_SECONDS,
)
SLA_BREACHES = Counter(
    "portal_sla_breaches",
    "Cases decided by a person after their SLA deadline, by policy.",
    ["policy"],
)

# --- LLM verification --------------------------------------------------------------------------
LLM_VERDICTS = Counter(
    "portal_llm_verdicts",
    "LLM verifications, by outcome (confirmed, disputed, uncertain, invalid, failed, "
    "unavailable, breaker_open, not_configured).",
    ["outcome"],
)
LLM_LATENCY = Histogram(
    "portal_llm_latency_seconds",
    "Wall time of one LLM verification call, by outcome.",
    ["outcome"],
    buckets=SLOW_SECONDS,
)
LLM_TOKENS = Counter(
    "portal_llm_tokens", "Tokens used by the LLM verifier, by kind (prompt, completion).", ["kind"]
)
LLM_COST = Counter(
    "portal_llm_cost",
    "The LLM verifier's cost at the configured prices (LLM_PROMPT_PRICE_PER_1K, "
    "LLM_COMPLETION_PRICE_PER_1K), in their currency.",
)

# --- enrichment --------------------------------------------------------------------------------
ENRICHMENT_STEPS = Counter(
    "portal_enrichment_steps",
    "Enrichment steps finished, by step (heatmaps, neighbours, hashes) and outcome (done, "
    "failed, skipped, retry).",
    ["step", "outcome"],
)
ENRICHMENT_DURATION = Histogram(
    "portal_enrichment_step_duration_seconds",
    "How long one enrichment step took, by step.",
    ["step"],
    buckets=SLOW_SECONDS,
)

# --- enforcement out ---------------------------------------------------------------------------
ENFORCEMENT_DELIVERIES = Counter(
    "portal_enforcement_deliveries",
    "Webhook delivery attempts to the marketplace, by message kind and outcome "
    "(delivered, retry, failed, disabled: a 410 turned the receiver off).",
    ["kind", "outcome"],
)
ENFORCEMENT_LAG = Histogram(
    "portal_enforcement_delivery_lag_seconds",
    "From the decision's message entering the outbox to the marketplace accepting it.",
    ["kind"],
    buckets=LAG_SECONDS,
)

# --- appeals, labels -------------------------------------------------------------------------
APPEALS = Counter(
    "portal_appeals",
    "Appeals received, by policy and the source of the decision appealed.",
    ["policy", "source"],
)
APPEAL_OVERTURNS = Counter(
    "portal_appeal_overturns",
    "Appeals decided, by policy, the source of the decision appealed, and outcome "
    "(upheld, overturned).",
    ["policy", "source", "outcome"],
)
LABELS_EXPORTED = Counter(
    "portal_labels_exported",
    "Training labels written to exports, by kind (positive, hard_negative, easy_negative).",
    ["kind"],
)
ALERTS_SENT = Counter(
    "portal_alerts_sent", "Alert webhook deliveries, by outcome (delivered, failed).", ["outcome"]
)

# --- logins (moderation_portal.core.login_throttle) -----------------------------------------
LOGIN_FAILURES = Counter(
    "portal_login_failures",
    "Failed logins: an unknown account, a wrong password or an inactive account.",
)
LOGIN_THROTTLED = Counter(
    "portal_login_throttled",
    "Logins refused without checking the password because too many failed before, by the "
    "locked scope (account, address).",
    ["scope"],
)

DB_UNAVAILABLE = Counter(
    "portal_db_unavailable",
    "Requests answered 503 because the database could not serve them, by reason "
    "(database_unavailable: unreachable or the connection dropped; pool_exhausted: every pooled "
    "connection of the process busy past DB_POOL_TIMEOUT_SECONDS).",
    ["reason"],
)


def db_unavailable(reason: str) -> None:
    if ENABLED:
        DB_UNAVAILABLE.labels(reason).inc()


# --- Celery ------------------------------------------------------------------------------------
CELERY_TASKS = Counter(
    "portal_celery_tasks",
    "Celery tasks finished, by task name and state (success, failure, retry, rejected).",
    ["task", "state"],
)
CELERY_RUNTIME = Histogram(
    "portal_celery_task_runtime_seconds",
    "How long a Celery task ran, by task name.",
    ["task"],
    buckets=SLOW_SECONDS,
)
CELERY_QUEUE_WAIT = Histogram(
    "portal_celery_task_queue_wait_seconds",
    "From a task being sent to a worker starting it, by task name.",
    ["task"],
    buckets=LAG_SECONDS,
)

# --- read at scrape time -----------------------------------------------------------------------
ScrapeCollector = Callable[[], Iterable[Metric]]
_SCRAPE_COLLECTORS: dict[str, ScrapeCollector] = {}


def register_scrape_collector(name: str, collect: ScrapeCollector) -> None:
    """Add (or replace, by name) a function that yields metric families read at scrape time,
    typically from the database. It runs in the web process answering `/metrics`."""
    _SCRAPE_COLLECTORS[name] = collect


def scrape_collectors() -> dict[str, ScrapeCollector]:
    return dict(_SCRAPE_COLLECTORS)
