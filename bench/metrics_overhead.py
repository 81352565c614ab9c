"""What recording the Prometheus metrics costs on the two hot paths, beside the same runs with
recording off (`metrics.ENABLED`, which every instrumented line checks), in the same process
on the same database, in multiprocess mode as deployed (values in mmap'ed files).

- ingest: batches of 100 simulated detection events through the `detection.ingest_events`
  task body (`apply()`: the Celery signals, validation, storage, case opening, automatic
  decisions, the scores histogram), in this process; the broker is only used for the
  follow-up tasks opening enqueues, alike in both modes.
- claim-next: one claimer taking the top case from a pending queue and putting it back
  (untimed), as bench/claim.py does with more claimers.

Rounds alternate on and off, and which goes first, so that a database growing and a noisy
machine weigh on both alike; the figures are the medians over the rounds.
"""

import os
import statistics
import time

from bench._db import bulk_pending_cases, reset_database, use_bench_database

DB = "moderation_portal_bench_metrics"
ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "8"))
INGEST_BATCHES = int(os.environ.get("BENCH_METRICS_INGEST_BATCHES", "6"))  # of 100, per run
CLAIM_SECONDS = float(os.environ.get("BENCH_METRICS_CLAIM_SECONDS", "3"))
PENDING = int(os.environ.get("BENCH_METRICS_PENDING", "20000"))
BATCH = 100

use_bench_database(DB)


def _modes(round_no: int) -> tuple[bool, bool]:
    return (True, False) if round_no % 2 == 0 else (False, True)


def ingest_rounds(metrics) -> dict[bool, list[float]]:
    from detection.intake.simulator import DetectionTierSimulator
    from reviews.cases.intake import ingest_events_task

    sim = DetectionTierSimulator(seed=31, sellers=300)
    for _ in range(2):  # warm-up: caches, first statements, compiled validators
        ingest_events_task.apply(args=[sim.batch(BATCH, duplicate_ratio=0.0)])
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_no in range(ROUNDS):
        for enabled in _modes(round_no):
            batches = [sim.batch(BATCH, duplicate_ratio=0.0) for _ in range(INGEST_BATCHES)]
            metrics.ENABLED = enabled
            started = time.perf_counter()
            for batch in batches:
                counts = ingest_events_task.apply(args=[batch]).get()
                assert counts["accepted"] == BATCH, counts
            rates[enabled].append(BATCH * INGEST_BATCHES / (time.perf_counter() - started))
    metrics.ENABLED = True
    return rates


def claim_rounds(metrics, user) -> dict[bool, list[list[float]]]:
    from django.db import connection

    from reviews.cases.claims import case_claim_next

    put_back = (
        "UPDATE reviews_case SET state = 'queued', claimed_by_id = NULL, claimed_at = NULL, "
        "lease_expires_at = NULL WHERE id = %s"
    )

    def run(seconds: float) -> list[float]:
        latencies = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            case = case_claim_next(user=user)
            latencies.append(time.perf_counter() - t0)
            if case is None:
                raise RuntimeError("the queue ran dry")
            with connection.cursor() as cursor:
                cursor.execute(put_back, [case.id])
        return latencies

    run(1.0)  # warm-up
    runs: dict[bool, list[list[float]]] = {True: [], False: []}
    for round_no in range(ROUNDS):
        for enabled in _modes(round_no):
            metrics.ENABLED = enabled
            runs[enabled].append(run(CLAIM_SECONDS))
    metrics.ENABLED = True
    return runs


def recording_cost_us(metrics) -> dict:
    """One labelled counter increment and one histogram observation, in microseconds."""
    n = 50_000
    started = time.perf_counter()
    for _ in range(n):
        metrics.CLAIMS.labels("bench", "claimed").inc()
    counter = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for _ in range(n):
        metrics.CLAIM_LATENCY.labels("bench").observe(0.002)
    histogram = (time.perf_counter() - started) / n * 1e6
    return {"counter_inc_us": round(counter, 2), "histogram_observe_us": round(histogram, 2)}


def main() -> None:
    import psycopg

    reset_database(DB)
    import django

    django.setup()
    from django.contrib.auth.models import Group, User

    from bench._common import percentile, write_result
    from moderation_portal.celery import app
    from moderation_portal.core import metrics

    assert "PROMETHEUS_MULTIPROC_DIR" in os.environ  # set by the settings: as deployed
    app.control.purge()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn, conn.cursor() as cur:
        bulk_pending_cases(cur, PENDING)
    user = User.objects.create_user("bench-metrics-claimer")
    user.groups.add(Group.objects.get(name="moderator"))

    try:
        ingest = ingest_rounds(metrics)
        claims = claim_rounds(metrics, user)
    finally:
        app.control.purge()  # the follow-up tasks ingest enqueued; no worker takes them here
    micro = recording_cost_us(metrics)

    def claim_summary(enabled: bool) -> dict:
        per_run = claims[enabled]
        return {
            "claims_per_s": round(statistics.median(len(r) / CLAIM_SECONDS for r in per_run), 1),
            "p50_ms": round(statistics.median(percentile(r, 50) * 1000 for r in per_run), 3),
            "p99_ms": round(statistics.median(percentile(r, 99) * 1000 for r in per_run), 3),
        }

    ingest_on, ingest_off = (round(statistics.median(ingest[m]), 1) for m in (True, False))
    claim_on, claim_off = claim_summary(True), claim_summary(False)
    per_round_ingest = [on / off for on, off in zip(ingest[True], ingest[False], strict=True)]
    per_round_claim = [
        len(on) / len(off) for on, off in zip(claims[True], claims[False], strict=True)
    ]
    # What the recording itself adds to one claim (a counter and a histogram), from the
    # microbenchmark: the floor under the noise of the end-to-end ratio.
    per_claim_us = micro["counter_inc_us"] + micro["histogram_observe_us"]
    write_result(
        "metrics_overhead",
        figures={
            "rounds": ROUNDS,
            "ingest_events_per_run": BATCH * INGEST_BATCHES,
            "claim_seconds_per_run": CLAIM_SECONDS,
            "pending_cases": PENDING,
            "ingest_events_per_s_metrics_on": ingest_on,
            "claim_metrics_on": claim_on,
            "recording": micro,
        },
        baseline={
            "ingest_events_per_s_metrics_off": ingest_off,
            "claim_metrics_off": claim_off,
            "what": "the same code with metrics.ENABLED false, in alternating rounds of the same "
            "run, same process, same database",
        },
        ratio={
            "ingest_rate_on_over_off": round(ingest_on / ingest_off, 3),
            "ingest_rate_on_over_off_per_round": [round(r, 3) for r in per_round_ingest],
            "claim_rate_on_over_off_per_round": [round(r, 3) for r in per_round_claim],
            "claim_recording_share_of_p50": round(per_claim_us / 1000 / claim_off["p50_ms"], 4),
            "claim_rate_on_over_off": round(
                claim_on["claims_per_s"] / claim_off["claims_per_s"], 3
            ),
            "claim_p50_on_over_off": round(claim_on["p50_ms"] / claim_off["p50_ms"], 3),
            "claim_p99_on_over_off": round(claim_on["p99_ms"] / claim_off["p99_ms"], 3),
        },
        aims={"ingest_rate_on_over_off": ">= 0.97", "claim_rate_on_over_off": ">= 0.97"},
        notes="Metrics on records, per ingest batch, one counter per outcome, the score histogram "
        "per policy of every stored event, cases opened and the decisions after commit, and the "
        "task's runtime; per claim, one counter and one latency observation. In multiprocess "
        "mode each is a write to an mmap'ed file. Both modes share the machine's 2 cores with "
        "PostgreSQL and Redis, so single rounds vary by a few per cent either way.",
    )


if __name__ == "__main__":
    main()
