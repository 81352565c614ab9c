"""Ingest throughput: detection events through the broker (Redis) and a real Celery worker into
PostgreSQL, end to end (publish → case rows), beside a raw bulk insert of the same rows (no broker,
no validation, no routing) measured in the same run on the same database.

Aims (issue 2): ≥ 500 events/s end to end on a 2-core machine, and ≥ 20% of the raw insert rate.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "moderation_portal_bench"
PG = "postgres://postgres@127.0.0.1:5432"
N_EVENTS = int(os.environ.get("BENCH_INGEST_EVENTS", "6000"))
BATCH = int(os.environ.get("BENCH_INGEST_BATCH", "100"))
WORKER_CONCURRENCY = int(os.environ.get("BENCH_INGEST_CONCURRENCY", "2"))

os.environ.update(
    DATABASE_URL=f"{PG}/{DB_NAME}",
    REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    SECRET_KEY="bench-only",
    CELERY_EAGER="false",
    LOG_LEVEL="WARNING",
    DJANGO_SETTINGS_MODULE="moderation_portal.settings",
    MEDIA_ROOT=str(ROOT / "var" / "bench-media"),
)


def reset_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, check=True
    )


def start_worker():
    log = open(ROOT / "var" / "bench-ingest-worker.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "moderation_portal",
            "worker",
            "-Q",
            "ingest",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"bench-{uuid.uuid4().hex[:6]}@%h",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc


def wait_for_cases(target: int, timeout: float) -> float:
    from reviews.models import Case

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Case.objects.count() >= target:
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"only {Case.objects.count()} of {target} cases after {timeout} s")


def raw_rows(events: list[dict]):
    """The rows ingest writes for these events, built without validation or routing."""
    from datetime import datetime
    from decimal import Decimal

    from detection.models import DetectionEvent, Listing, ListingImage, Seller
    from moderation_portal.core.models import AuditEvent
    from reviews.models import Case, LadderVersion

    ladder = LadderVersion.objects.get(is_active=True)
    parse = datetime.fromisoformat
    sellers, listings, dets, images, cases, audits = {}, [], [], [], [], []
    for ev in events:
        s, li, d = ev["seller"], ev["listing"], ev["detection"]
        sellers.setdefault(
            s["id"],
            Seller(
                external_id="raw-" + s["id"],
                account_created_at=parse(s["account_created_at"]),
                prior_violations=s["prior_violations"],
                country=s["country"],
            ),
        )
        listings.append(
            Listing(
                external_id="raw-" + li["id"],
                title=li["title"],
                description=li["description"],
                price_amount=Decimal(li["price"]["amount"]),
                price_currency=li["price"]["currency"],
                category=li["category"],
                region=li["region"],
                language=li["language"],
                listed_at=parse(li["created_at"]),
            )
        )
        top = max(d["scores"], key=d["scores"].get)
        dets.append(
            DetectionEvent(
                event_id="raw-" + ev["event_id"],
                trace_id=ev["trace_id"],
                emitted_at=parse(ev["emitted_at"]),
                model_name=d["model"],
                model_version=d["model_version"],
                scores=d["scores"],
                modality_scores=d["modality_scores"],
                reason_codes=d["reason_codes"],
                top_policy=top,
                top_score=d["scores"][top],
                source="raw",
            )
        )
        images.append(
            [
                ListingImage(
                    external_id=img["id"],
                    position=i,
                    sha256=img["sha256"],
                    content_type="image/jpeg",
                )
                for i, img in enumerate(li["images"])
            ]
        )
        cases.append(
            Case(
                trace_id=ev["trace_id"],
                policy_id=top,
                score=d["scores"][top],
                region=li["region"],
                language=li["language"],
                route="human_review",
                ladder_version=ladder,
                state="queued",
                priority_key=parse(ev["emitted_at"]),
                sla_due_at=parse(ev["emitted_at"]),
            )
        )
        audits.append(
            AuditEvent(
                actor_label="raw",
                action="case_opened",
                object_type="case",
                object_id="0",
                trace_id=ev["trace_id"],
            )
        )
    return sellers, listings, dets, images, cases, audits


def raw_insert(events: list[dict]) -> float:
    """Bulk insert the same rows, one transaction per batch of the same size as ingest's."""
    from django.db import transaction

    from detection.models import DetectionEvent, Listing, ListingImage, Seller
    from moderation_portal.core.models import AuditEvent
    from reviews.models import Case

    sellers, listings, dets, images, cases, audits = raw_rows(events)
    started = time.monotonic()
    with transaction.atomic():
        Seller.objects.bulk_create(list(sellers.values()))
    for lo in range(0, len(events), BATCH):
        with transaction.atomic():
            chunk = range(lo, min(lo + BATCH, len(events)))
            for i in chunk:
                ev = events[i]
                listings[i].seller = sellers[ev["seller"]["id"]]
            Listing.objects.bulk_create([listings[i] for i in chunk])
            for i in chunk:
                dets[i].listing = listings[i]
                for img in images[i]:
                    img.listing = listings[i]
            DetectionEvent.objects.bulk_create([dets[i] for i in chunk])
            ListingImage.objects.bulk_create([img for i in chunk for img in images[i]])
            for i in chunk:
                cases[i].detection_event, cases[i].listing = dets[i], listings[i]
            Case.objects.bulk_create([cases[i] for i in chunk])
            AuditEvent.objects.bulk_create([audits[i] for i in chunk])
    return time.monotonic() - started


def main() -> None:
    (ROOT / "var").mkdir(exist_ok=True)
    reset_database()
    import django

    django.setup()
    from bench._common import write_result
    from detection.intake.simulator import DetectionTierSimulator
    from moderation_portal.celery import app
    from reviews.cases.intake import ingest_events_task
    from reviews.models import Case

    sim = DetectionTierSimulator(seed=11, sellers=400)
    warmup = sim.batch(200, duplicate_ratio=0.0)
    events = sim.batch(N_EVENTS, duplicate_ratio=0.0)
    raw_events = DetectionTierSimulator(seed=12, sellers=400).batch(N_EVENTS, duplicate_ratio=0.0)
    payload_bytes = sum(len(str(e)) for e in events) / len(events)

    app.control.purge()
    worker = start_worker()
    try:
        for lo in range(0, len(warmup), BATCH):
            ingest_events_task.apply_async(args=[warmup[lo : lo + BATCH]], queue="ingest")
        wait_for_cases(len(warmup), timeout=180)
        base = Case.objects.count()
        started = time.monotonic()
        for lo in range(0, len(events), BATCH):
            ingest_events_task.apply_async(args=[events[lo : lo + BATCH]], queue="ingest")
        published = time.monotonic()
        finished = wait_for_cases(base + len(events), timeout=600)
    finally:
        worker.terminate()
        worker.wait(30)
    e2e_seconds = finished - started
    raw_seconds = raw_insert(raw_events)

    e2e_rate = len(events) / e2e_seconds
    raw_rate = len(raw_events) / raw_seconds
    write_result(
        "ingest",
        figures={
            "events": len(events),
            "batch_size": BATCH,
            "worker_processes": WORKER_CONCURRENCY,
            "end_to_end_events_per_s": round(e2e_rate, 1),
            "end_to_end_seconds": round(e2e_seconds, 2),
            "publish_seconds": round(published - started, 2),
            "events_per_day_at_this_rate": int(e2e_rate * 86400),
            "mean_event_json_bytes": int(payload_bytes),
        },
        baseline={
            "raw_bulk_insert_events_per_s": round(raw_rate, 1),
            "raw_bulk_insert_seconds": round(raw_seconds, 2),
            "what": "bulk_create of the same rows (seller, listing, event, images, case, audit) "
            "in batches of the same size, no broker, no validation, no routing, same database",
        },
        ratio={"end_to_end_over_raw_insert": round(e2e_rate / raw_rate, 3)},
        aims={
            "end_to_end_events_per_s": ">= 500",
            "end_to_end_over_raw_insert": ">= 0.20",
        },
        notes="Events carry one or two inline JPEG images (base64), validated and decoded on "
        "ingest. Worker, broker, database and publisher share the machine's cores.",
    )


if __name__ == "__main__":
    main()
