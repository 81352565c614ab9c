"""The portal's own work around one verdict: gathering the context from the database,
recording the verdict and applying it to routing, beside the bare client call to the same
endpoint in the same run. Used by bench/llm_verdict.py."""

import time

from bench._db import reset_database, use_bench_database

DB = "moderation_portal_bench_llm"


def portal_overhead(*, base_url: str, model: str, rounds: int) -> dict:
    import os

    use_bench_database(DB)
    os.environ.update(
        LLM_BASE_URL=base_url,
        LLM_MODEL=model,
        LLM_MAX_CONCURRENCY="1",
        LLM_READ_TIMEOUT_SECONDS="180",
        LLM_DEADLINE_SECONDS="400",
    )
    reset_database(DB)
    import django

    django.setup()
    from bench._common import summary_ms
    from detection.intake.simulator import DetectionTierSimulator
    from llm_verify import services as llm_services
    from reviews.cases.intake import detections_ingest as events_ingest
    from reviews.cases.verification import case_apply_verdict, context_for_case
    from reviews.models import Case
    from tests.fixtures_evidence import evidence_fill

    sim = DetectionTierSimulator(seed=8)
    events = []
    for _ in range(rounds):
        ev = sim.event()
        policy = max(ev["detection"]["scores"], key=ev["detection"]["scores"].get)
        ev["detection"]["scores"] = {policy: 0.8}
        events.append(ev)
    events_ingest(
        events=events, source="bench"
    )  # no worker runs here: the verifications are ours to time
    cases = list(Case.objects.filter(route="llm_verify").order_by("id"))
    for case in cases:
        evidence_fill(case, images=2, neighbours=6)
    client = llm_services.client()
    gather, record, bare, total = [], [], [], []
    for case in cases:
        case = Case.objects.select_related(
            "listing__seller", "detection_event", "policy", "ladder_version"
        ).get(id=case.id)
        t0 = time.perf_counter()
        context = context_for_case(case)
        t1 = time.perf_counter()
        result = client.verify(context)  # the bare call: prompt, request, parse, check
        t2 = time.perf_counter()
        from llm_verify.models import LlmVerdict

        row = LlmVerdict.objects.create(
            event_id=case.detection_event_id,
            status=result.status if result.status in LlmVerdict.Status.values else "error",
            decision=result.verdict.decision if result.verdict else "",
            model=result.model,
            prompt_version=result.prompt_version,
            latency_ms=result.latency_ms,
            raw_response=result.raw_response[:20000],
            context=context,
            evidence=(result.record or {}).get("evidence", []),
        )
        case_apply_verdict(case=case, verdict=row)
        t3 = time.perf_counter()
        gather.append(t1 - t0)
        bare.append(t2 - t1)
        record.append(t3 - t2)
        total.append(t3 - t0)
    overhead = [g + r for g, r in zip(gather, record, strict=True)]
    return {
        "cases": len(cases),
        "context_gathering": summary_ms(gather),
        "recording_and_routing": summary_ms(record),
        "portal_overhead": summary_ms(overhead),
        "bare_client_call": summary_ms(bare),
        "end_to_end": summary_ms(total),
        "overhead_over_bare_p50": round(
            summary_ms(overhead)["p50_ms"] / summary_ms(bare)["p50_ms"], 4
        ),
    }
