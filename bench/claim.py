"""Claim-next under concurrency on PostgreSQL: the portal's claim (queue filter, skip list,
SKIP LOCKED, conditional update, audit event, live notification, metrics) beside a bare
`UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING id` on the same table in the
same run, with 8, 32 and 50 concurrent claimer processes, at 1M and at 1k pending cases.

Each claimer claims, then (untimed) puts the case back, so the number pending stays constant.
At each concurrency the two modes run in turn, portal first then bare, then the other way round,
and so on (a busy machine or a table that bloats during a run weighs on both alike), with a
VACUUM of the cases before each run; a mode's figures are its runs together.

Aims: portal claims/s at least half the bare statement's at 8, 32 and 50 claimers with 1M
pending (reported as pass/fail per concurrency), p99 under 20 ms at 50 claimers, and no slower
at 1M pending than at 1k.

Environment: BENCH_CLAIM_PENDING (1000000), BENCH_CLAIM_SECONDS per run (6), BENCH_CLAIM_ROUNDS
(runs of each mode, 2), BENCH_CLAIM_CONCURRENCY (8,32,50), BENCH_CLAIM_SIZES (1M,1k: the second
is the first cut down to 1,000 pending), BENCH_CLAIM_DB (the scratch database's name),
BENCH_CLAIM_REUSE=1 (keep the scratch database of an earlier run when it holds the pending
cases: no migrate and no fill), BENCH_CLAIM_STRICT=1 (exit 1 when a throughput aim fails).
"""

import multiprocessing as mp
import os
import statistics
import sys
import time

from bench._db import bulk_pending_cases, reset_database, use_bench_database

DB = os.environ.get("BENCH_CLAIM_DB", "moderation_portal_bench_claim")
PENDING = int(os.environ.get("BENCH_CLAIM_PENDING", "1000000"))
SECONDS = float(os.environ.get("BENCH_CLAIM_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_CLAIM_ROUNDS", "2"))  # runs of each mode, alternating
CONCURRENCY = [int(x) for x in os.environ.get("BENCH_CLAIM_CONCURRENCY", "8,32,50").split(",")]
SIZES = [x.strip() for x in os.environ.get("BENCH_CLAIM_SIZES", "1M,1k").split(",") if x.strip()]
REUSE = os.environ.get("BENCH_CLAIM_REUSE", "") == "1"
STRICT = os.environ.get("BENCH_CLAIM_STRICT", "") == "1"
SMALL = 1000
THROUGHPUT_AIM = 0.5  # portal claims/s over bare claims/s, at least

use_bench_database(DB)

BARE = (
    "UPDATE reviews_case SET state = 'claimed', claimed_by_id = %s, claimed_at = now(), "
    "lease_expires_at = now() + interval '5 minutes' WHERE id = ("
    "SELECT id FROM reviews_case WHERE state = 'queued' AND queue_kind = 'review' "
    "ORDER BY priority_key, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
)
PUT_BACK = (
    "UPDATE reviews_case SET state = 'queued', claimed_by_id = NULL, claimed_at = NULL, "
    "lease_expires_at = NULL "
    "WHERE id = %s"
)
# Every bench case back in the queue (after an interrupted or cut-down run), for reuse.
RESTORE = (
    "UPDATE reviews_case SET state = 'queued', claimed_by_id = NULL, claimed_at = NULL, "
    "lease_expires_at = NULL, decided_at = NULL "
    "WHERE route_reason = 'bench' AND state <> 'queued'"
)


def _init():
    import django

    django.setup()


def _claimer(args):
    mode, user_id, start_at, seconds = args
    from django.contrib.auth.models import User
    from django.db import connection

    from reviews.cases.claims import case_claim_next

    user = User.objects.get(id=user_id)
    latencies = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        if mode == "portal":
            case = case_claim_next(user=user)
            case_id = case.id if case else None
        else:
            with connection.cursor() as cursor:
                cursor.execute(BARE, [user_id])
                row = cursor.fetchone()
                case_id = row[0] if row else None
        latencies.append(time.perf_counter() - t0)
        if case_id is None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id, state, claimed_at, lease_expires_at, now() FROM reviews_case "
                    "WHERE claimed_by_id = %s",
                    [user_id],
                )
                held = cursor.fetchall()
            raise RuntimeError(
                f"no case to claim ({mode} claim, user {user_id}, after {len(latencies)} "
                f"claims; the user's claims: {held})"
            )
        with connection.cursor() as cursor:
            cursor.execute(PUT_BACK, [case_id])
    connection.close()
    return latencies


def _vacuum() -> None:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM reviews_case")


def _timed(pool, mode: str, claimers: int, users: list[int]) -> list[float]:
    _vacuum()
    # warm-up (connections, first statements, caches), not counted
    pool.map(
        _claimer, [(mode, users[i], time.time() + 0.5, 0.5) for i in range(claimers)], chunksize=1
    )
    start_at = time.time() + 1.0
    results = pool.map(
        _claimer, [(mode, users[i], start_at, SECONDS) for i in range(claimers)], chunksize=1
    )
    return [x for r in results for x in r]


def _summary(latencies: list[float], runs: int) -> dict:
    from bench._common import summary_ms

    return {"claims_per_s": round(len(latencies) / (SECONDS * runs), 1), **summary_ms(latencies)}


def compare(pool, claimers: int, users: list[int]) -> tuple[dict, dict, float]:
    """Portal then bare, then bare then portal, and so on: each mode's figures over its runs,
    and the median over rounds of the round's portal/bare claims/s (the two runs of a round are
    next to each other in time, so a burst of other work on the machine weighs on both)."""
    latencies: dict[str, list[float]] = {"portal": [], "bare": []}
    per_round = []
    for round_no in range(ROUNDS):
        got = {}
        for mode in ("portal", "bare") if round_no % 2 == 0 else ("bare", "portal"):
            got[mode] = _timed(pool, mode, claimers, users)
            latencies[mode] += got[mode]
        per_round.append(len(got["portal"]) / len(got["bare"]))
    return (
        _summary(latencies["portal"], ROUNDS),
        _summary(latencies["bare"], ROUNDS),
        round(statistics.median(per_round), 2),
    )


def _pending() -> int:
    import psycopg

    try:
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(RESTORE)
            row = conn.execute(
                "SELECT count(*) FROM reviews_case WHERE state = 'queued' AND queue_kind = 'review'"
            ).fetchone()
            users = conn.execute(
                "SELECT count(*) FROM auth_user WHERE username LIKE 'bench-claimer-%%'"
            ).fetchone()
    except psycopg.Error:
        return 0
    return row[0] if users[0] >= max(CONCURRENCY) else 0


def prepare() -> tuple[list[int], float | None]:
    """The scratch database with PENDING queued cases and the claimers' accounts."""
    import psycopg

    reused = REUSE and _pending() == PENDING
    fill_seconds = None
    if not reused:
        reset_database(DB)
    import django

    django.setup()
    from django.contrib.auth.models import Group, User

    if not reused:
        t0 = time.monotonic()
        with (
            psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn,
            conn.cursor() as cur,
        ):
            bulk_pending_cases(cur, PENDING)
        fill_seconds = round(time.monotonic() - t0, 1)
        group = Group.objects.get(name="moderator")
        for i in range(max(CONCURRENCY)):
            u = User.objects.create_user(f"bench-claimer-{i}")
            u.groups.add(group)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE reviews_case")
    users = list(
        User.objects.filter(username__startswith="bench-claimer-")
        .order_by("id")
        .values_list("id", flat=True)
    )
    from django.db import connection

    connection.close()
    return users, fill_seconds


def _cut_down() -> None:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "UPDATE reviews_case SET state = 'decided' "
            "WHERE state = 'queued' AND id NOT IN "
            "(SELECT id FROM reviews_case WHERE state = 'queued' "
            f"ORDER BY priority_key, id LIMIT {SMALL})"
        )
        conn.execute("VACUUM ANALYZE reviews_case")


def main() -> int:
    from bench._common import write_result

    users, fill_seconds = prepare()
    figures: dict = {
        "pending_cases": PENDING,
        "seconds_per_run": SECONDS,
        "runs_per_mode": ROUNDS,
        "fill_seconds": fill_seconds if fill_seconds is not None else "reused",
    }
    baseline: dict = {}
    ratio: dict = {}
    checks: dict = {}
    ctx = mp.get_context("fork")
    with ctx.Pool(max(CONCURRENCY), initializer=_init) as pool:
        for size_label in SIZES:
            if size_label != SIZES[0]:
                _cut_down()
            for n in CONCURRENCY:
                portal, bare, median_ratio = compare(pool, n, users)
                key = f"{size_label}_pending_{n}_claimers"
                figures[key] = portal
                baseline[key] = bare
                throughput = round(portal["claims_per_s"] / bare["claims_per_s"], 2)
                ratio[f"{key}_p99_portal_over_bare"] = round(portal["p99_ms"] / bare["p99_ms"], 2)
                ratio[f"{key}_throughput_portal_over_bare"] = throughput
                ratio[f"{key}_throughput_portal_over_bare_median_of_rounds"] = median_ratio
                if size_label == SIZES[0]:
                    checks[f"{n}_claimers"] = {
                        "portal_claims_per_s": portal["claims_per_s"],
                        "bare_claims_per_s": bare["claims_per_s"],
                        "portal_over_bare": throughput,
                        "portal_over_bare_median_of_rounds": median_ratio,
                        "portal_p50_ms": portal["p50_ms"],
                        "portal_p99_ms": portal["p99_ms"],
                        "bare_p50_ms": bare["p50_ms"],
                        "bare_p99_ms": bare["p99_ms"],
                        "pass": throughput >= THROUGHPUT_AIM,
                    }
                print(key, "portal", portal, "bare", bare, flush=True)
    if len(SIZES) > 1:
        for n in CONCURRENCY:
            ratio[f"p99_{SIZES[0]}_over_{SIZES[1]}_{n}_claimers"] = round(
                figures[f"{SIZES[0]}_pending_{n}_claimers"]["p99_ms"]
                / figures[f"{SIZES[1]}_pending_{n}_claimers"]["p99_ms"],
                2,
            )
    figures[f"throughput_aim_{SIZES[0]}_pending"] = checks
    print(f"claims/s at {SIZES[0]} pending, portal against bare (aim: >= {THROUGHPUT_AIM}):")
    print(
        " claimers | portal/s |  bare/s | ratio (median of rounds) | portal p50/p99 ms "
        "| bare p50/p99 ms | aim"
    )
    for label, c in checks.items():
        print(
            f" {label.split('_')[0]:>8} | {c['portal_claims_per_s']:>8} | "
            f"{c['bare_claims_per_s']:>7} | {c['portal_over_bare']:>5} "
            f"({c['portal_over_bare_median_of_rounds']}) | "
            f"{c['portal_p50_ms']:>7} / {c['portal_p99_ms']:<7} | "
            f"{c['bare_p50_ms']:>6} / {c['bare_p99_ms']:<6} | {'pass' if c['pass'] else 'FAIL'}"
        )
    write_result(
        "claim",
        figures=figures,
        baseline=baseline,
        ratio=ratio,
        aims={
            f"throughput_portal_over_bare_at_{SIZES[0]}_pending": f">= {THROUGHPUT_AIM}",
            "p99_ms_at_50_claimers": "< 20",
            "p99_1M_over_1k": "<= 1 (no slower)",
        },
        notes="Claimers are separate processes (one PostgreSQL connection each) on the same "
        "machine as the database, so at 32 and 50 claimers most of the latency is waiting for "
        "a core. The portal's claim also writes an audit event (in the claim's statement), "
        "enqueues a live-update event (sent to Redis by a background thread, coalesced) and "
        "records its Prometheus metrics per claim.",
    )
    return 1 if STRICT and not all(c["pass"] for c in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
