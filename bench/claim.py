"""Claim-next under concurrency on PostgreSQL: the portal's claim (queue filter, skip list,
SKIP LOCKED, conditional update, audit event, live notification) beside a bare
`UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)` on the same table in the same run,
with 8, 32 and 50 concurrent claimer processes, at 1M and at 1k pending cases.

Each claimer claims, then (untimed) puts the case back, so the number pending stays constant.
Aims (issue 5): p99 under 20 ms at 50 claimers, within 2x of the bare claim, and no slower at
1M pending than at 1k.
"""

import multiprocessing as mp
import os
import time

from bench._db import bulk_pending_cases, reset_database, use_bench_database

DB = "moderation_portal_bench_claim"
PENDING = int(os.environ.get("BENCH_CLAIM_PENDING", "1000000"))
SECONDS = float(os.environ.get("BENCH_CLAIM_SECONDS", "6"))
CONCURRENCY = [int(x) for x in os.environ.get("BENCH_CLAIM_CONCURRENCY", "8,32,50").split(",")]

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
            raise RuntimeError("the queue ran dry")
        with connection.cursor() as cursor:
            cursor.execute(PUT_BACK, [case_id])
    connection.close()
    return latencies


def run(pool, mode: str, claimers: int, users: list[int]) -> dict:
    from bench._common import summary_ms

    # warm-up (connections, first statements, caches), not counted
    pool.map(
        _claimer, [(mode, users[i], time.time() + 0.5, 0.5) for i in range(claimers)], chunksize=1
    )
    start_at = time.time() + 1.0
    results = pool.map(
        _claimer, [(mode, users[i], start_at, SECONDS) for i in range(claimers)], chunksize=1
    )
    latencies = [x for r in results for x in r]
    return {"claims_per_s": round(len(latencies) / SECONDS, 1), **summary_ms(latencies)}


def main() -> None:
    import psycopg

    reset_database(DB)
    import django

    django.setup()
    from django.contrib.auth.models import Group, User

    from bench._common import write_result

    t0 = time.monotonic()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn, conn.cursor() as cur:
        bulk_pending_cases(cur, PENDING)
    fill_seconds = time.monotonic() - t0
    group = Group.objects.get(name="moderator")
    users = []
    for i in range(max(CONCURRENCY)):
        u = User.objects.create_user(f"bench-claimer-{i}")
        u.groups.add(group)
        users.append(u.id)
    from django.db import connection

    connection.close()

    figures: dict = {
        "pending_cases": PENDING,
        "seconds_per_run": SECONDS,
        "fill_seconds": round(fill_seconds, 1),
    }
    baseline: dict = {}
    ratio: dict = {}
    ctx = mp.get_context("fork")
    with ctx.Pool(max(CONCURRENCY), initializer=_init) as pool:
        for size_label in ("1M", "1k"):
            if size_label == "1k":
                with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
                    conn.execute(
                        "UPDATE reviews_case SET state = 'decided' "
                        "WHERE state = 'queued' AND id NOT IN "
                        "(SELECT id FROM reviews_case WHERE state = 'queued' "
                        "ORDER BY priority_key, id LIMIT 1000)"
                    )
                    conn.execute("VACUUM ANALYZE reviews_case")
            for n in CONCURRENCY:
                portal = run(pool, "portal", n, users)
                bare = run(pool, "bare", n, users)
                key = f"{size_label}_pending_{n}_claimers"
                figures[key] = portal
                baseline[key] = bare
                ratio[f"{key}_p99_portal_over_bare"] = round(portal["p99_ms"] / bare["p99_ms"], 2)
                ratio[f"{key}_throughput_portal_over_bare"] = round(
                    portal["claims_per_s"] / bare["claims_per_s"], 2
                )
                print(key, "portal", portal, "bare", bare, flush=True)
    for n in CONCURRENCY:
        ratio[f"p99_1M_over_1k_{n}_claimers"] = round(
            figures[f"1M_pending_{n}_claimers"]["p99_ms"]
            / figures[f"1k_pending_{n}_claimers"]["p99_ms"],
            2,
        )
    write_result(
        "claim",
        figures=figures,
        baseline=baseline,
        ratio=ratio,
        aims={
            "p99_ms_at_50_claimers": "< 20",
            "p99_portal_over_bare": "<= 2",
            "p99_1M_over_1k": "<= 1 (no slower)",
        },
        notes="Claimers are separate processes (one PostgreSQL connection each) on the same "
        "2-core machine as the database, so at 32 and 50 claimers most of the latency is "
        "waiting for a core. The portal's claim also writes an audit event and publishes a "
        "live-update event (Redis) per claim.",
    )


if __name__ == "__main__":
    main()
