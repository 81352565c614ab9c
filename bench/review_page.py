"""The review page's server time (Django's full request path in-process: middleware, session,
role checks, queries, templates) with all enrichment present (6 images with heatmaps, 8
neighbours, hash matches, an LLM verdict), beside the same page with the least evidence
(1 image, no neighbours) in the same run; and both pages' query counts."""

import os
import time

from bench._db import reset_database, use_bench_database

DB = "moderation_portal_bench_page"
REQUESTS = int(os.environ.get("BENCH_PAGE_REQUESTS", "300"))

use_bench_database(DB)


def main() -> None:
    reset_database(DB)
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench._common import summary_ms, write_result
    from detection.intake.simulator import DetectionTierSimulator
    from reviews.cases.intake import detections_ingest as events_ingest
    from reviews.models import Case
    from tests.fixtures_evidence import evidence_fill

    sim = DetectionTierSimulator(seed=3)
    events = []
    for _ in range(40):
        ev = sim.event()
        ev["detection"]["scores"] = {"firearms": 0.62}
        events.append(ev)
    events_ingest(events=events, source="bench")
    cases = list(Case.objects.order_by("id"))
    full, bare = cases[0], cases[1]
    evidence_fill(full, images=6, neighbours=8)
    user = User.objects.create_user("bench-reader", password="x" * 20)
    user.groups.add(Group.objects.get(name="moderator"))
    client = Client()
    client.force_login(user)

    def timed(case_id: int) -> tuple[list[float], int]:
        for _ in range(10):
            client.get(f"/cases/{case_id}/")
        times = []
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            response = client.get(f"/cases/{case_id}/")
            times.append(time.perf_counter() - t0)
            assert response.status_code == 200
        with CaptureQueriesContext(connection) as ctx:
            client.get(f"/cases/{case_id}/")
        return times, len(ctx.captured_queries)

    bare_times, bare_queries = timed(bare.id)
    full_times, full_queries = timed(full.id)
    full_s, bare_s = summary_ms(full_times), summary_ms(bare_times)
    write_result(
        "review_page",
        figures={"all_evidence": {**full_s, "queries": full_queries, "images": 6, "neighbours": 8}},
        baseline={
            "least_evidence": {**bare_s, "queries": bare_queries, "images": 1, "neighbours": 0}
        },
        ratio={
            "p50_all_over_least": round(full_s["p50_ms"] / bare_s["p50_ms"], 2),
            "p99_all_over_least": round(full_s["p99_ms"] / bare_s["p99_ms"], 2),
            "queries_all_minus_least": full_queries - bare_queries,
        },
        aims={"queries_all_minus_least": "0 (the count does not grow with images or neighbours)"},
        notes="In-process requests through Django's test client against PostgreSQL: the "
        "server's own time, no network. The page reads the images' bytes through separate "
        "role-checked requests, not counted.",
    )


if __name__ == "__main__":
    main()
