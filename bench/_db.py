"""A scratch PostgreSQL database for the benchmarks, migrated fresh, and bulk fixtures."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def use_bench_database(name: str) -> None:
    os.environ.update(
        DATABASE_URL=f"{PG}/{name}",
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        SECRET_KEY="bench-only",
        CELERY_EAGER="false",
        SECURE_COOKIES="false",  # the benches talk plain HTTP on loopback
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="moderation_portal.settings",
        MEDIA_ROOT=str(ROOT / "var" / "bench-media"),
        # The benches fork claimer and worker processes after Django has connected: a psycopg
        # pool does not survive a fork (its threads stay behind), so each process keeps one
        # connection of its own instead, as a Celery prefork child does.
        DB_POOL=os.environ.get("BENCH_DB_POOL", "false"),
    )


def reset_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = dict(os.environ, DATABASE_URL=f"{PG}/{name}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        check=True,
        env=env,
    )


def bulk_pending_cases(cursor, n: int, *, sellers: int = 5000) -> None:
    """n queued human-review cases (with their sellers, listings and events) in a few statements."""
    cursor.execute(
        "INSERT INTO detection_seller (external_id, account_created_at, prior_violations, country,"
        " first_seen_at, updated_at) "
        "SELECT 'bs-' || g, now() - interval '400 days', g %% 3, 'US', now(), now()"
        " FROM generate_series(1, %s) g",
        [sellers],
    )
    cursor.execute(
        "INSERT INTO detection_listing (external_id, seller_id, title, description, price_amount,"
        " price_currency, category,"
        " region, language, listed_at, first_seen_at) "
        "SELECT 'bl-' || g, (SELECT min(id) FROM detection_seller) + (g %% %s), 'Listing ' || g,"
        " 'Description of listing ' || g,"
        " 10 + g %% 500, 'USD', 'other', 'US', 'en', now() - interval '1 hour', now()"
        " FROM generate_series(1, %s) g",
        [sellers, n],
    )
    cursor.execute(
        "INSERT INTO detection_detectionevent (event_id, trace_id, schema_version, emitted_at,"
        " received_at, listing_id,"
        " model_name, model_version, scores, modality_scores, reason_codes, is_sample, top_policy,"
        " top_score, source, ingest_batch) "
        "SELECT 'be-' || l.id, 'bt-' || l.id, 1, now() - (l.id % 3600) * interval '1 second',"
        " now(), l.id, 'listing-guard',"
        " '2026.11.1', jsonb_build_object('firearms', 0.5 + (l.id % 45) / 100.0), '{}'::jsonb,"
        " '[]'::jsonb, false, 'firearms',"
        " 0.5 + (l.id % 45) / 100.0, 'bench', gen_random_uuid() FROM detection_listing l"
        " WHERE l.external_id LIKE 'bl-%'"
    )
    cursor.execute(
        "INSERT INTO reviews_case (detection_event_id, listing_id, trace_id, policy_id, score,"
        " region, language, route,"
        " route_reason, ladder_version_id, state, queue_kind, priority_key, sla_due_at, llm_state,"
        " ladder_action,"
        " suspension_review, created_at) "
        "SELECT e.id, e.listing_id, e.trace_id, 'firearms', e.top_score, 'US', 'en',"
        " 'human_review', 'bench', "
        " (SELECT id FROM reviews_ladderversion WHERE is_active), 'queued', 'review',"
        " e.emitted_at + interval '4 hours' - (300 + 120 * e.top_score) * interval '1 minute',"
        " e.emitted_at + interval '4 hours',"
        " 'not_applicable', 'none', false, now() FROM detection_detectionevent e"
        " WHERE e.source = 'bench'"
    )
    cursor.execute("ANALYZE")
