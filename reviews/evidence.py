"""Everything the review page and the API show about a case beyond the listing: one place, a
fixed number of queries however many images, heatmaps or neighbours there are."""

from django.urls import reverse

from detection.enrichment import STEPS, model_description
from detection.models import EnrichmentStep, HashMatch, Heatmap, Neighbour
from reviews.models import Case, Decision

STEP_LABELS = dict(EnrichmentStep.Name.choices)


def case_evidence(case: Case) -> dict:
    event_id = case.detection_event_id
    images = list(case.listing.images.all())
    heatmaps: dict[int, list[Heatmap]] = {}
    for hm in Heatmap.objects.filter(event_id=event_id).order_by("id"):
        heatmaps.setdefault(hm.image_id, []).append(hm)
    for image in images:
        image.heatmaps_for_case = heatmaps.get(image.id, [])
    steps = {s.name: s for s in EnrichmentStep.objects.filter(event_id=event_id)}
    step_rows = []
    for name in STEPS:
        step = steps.get(name)
        if step is None:
            state, detail = ("not_applicable", "not enriched (routed to allow)") if case.route == Case.Route.ALLOW else (
                "pending", "queued")
        else:
            state, detail = step.state, step.detail
        step_rows.append({"name": str(name), "label": STEP_LABELS[name], "state": state,
                          "state_label": EnrichmentStep.State(state).label if state in EnrichmentStep.State.values else "not applicable",
                          "detail": detail})
    neighbours_qs = list(
        Neighbour.objects.filter(event_id=event_id)
        .select_related("reference", "index_version")
        .order_by("-index_version__created_at", "rank")
    )
    index_version = neighbours_qs[0].index_version if neighbours_qs else None
    shown = [n for n in neighbours_qs if n.index_version_id == (index_version.id if index_version else None)]
    decisions = {
        d.id: d for d in Decision.objects.filter(id__in=[n.reference.decision_id for n in shown if n.reference.decision_id])
    }
    neighbours = []
    for n in shown:
        ref = n.reference
        decision = decisions.get(ref.decision_id)
        neighbours.append({
            "title": ref.title or ref.bank_ref,
            "policy": ref.policy,
            "decision": f"{decision.get_verdict_display()}, {decision.get_action_display()}" if decision
            else ("known-bad bank entry" if ref.source == "import" else ref.decision_action),
            "decided_at": ref.decided_at or ref.created_at,
            "similarity": n.similarity,
            "case_id": ref.case_id,
            "image_url": (reverse("reviews:listing_image", args=[ref.image_id]) if ref.image_id
                          else reverse("reviews:reference_image", args=[ref.id]) if ref.image_file else None),
            "source": ref.source,
        })
    matches = [
        {"kind": m.kind, "kind_label": m.get_kind_display(), "image_position": m.image.position + 1,
         "policy": m.known_bad.policy, "detail": f"{m.known_bad.label or m.known_bad.bank_ref} (distance {m.distance})",
         "distance": m.distance, "image_id": m.image_id}
        for m in HashMatch.objects.filter(event_id=event_id).select_related("known_bad", "image").order_by("distance")
    ]
    from llm_verify.models import LlmVerdict

    verdict = LlmVerdict.objects.filter(event_id=event_id).order_by("-created_at", "-id").first()
    return {
        "images": images,
        "enrichment_steps": step_rows,
        "hash_matches": matches,
        "neighbours": neighbours,
        "neighbours_index_version": index_version.version if index_version else None,
        "llm_verdict": verdict,
        "model": model_description(),
    }
