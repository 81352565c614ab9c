"""A case's evidence as the review page, the case API and the LLM's context show it, built from
detection's one read model (detection.evidence.read_model) plus what only reviews knows (the
decisions behind similar cases) and the LLM verdict. A fixed number of queries per call,
however many cases, images, heatmaps or neighbours."""

from django.urls import reverse

from detection.evidence.read_model import EventEvidence, evidence_for_events
from detection.evidence.vectors import model_description
from detection.models import KnownBadImage, ListingImage, ReferenceItem
from llm_verify.models import LlmVerdict
from reviews.cases.models import Case
from reviews.decisions.models import Decision


def cases_evidence(cases: list[Case]) -> dict[int, dict]:
    """Case id → its evidence (see `case_evidence`), for many cases at once."""
    base = evidence_for_events(
        events={c.detection_event_id: (c.listing_id, c.route != Case.Route.ALLOW) for c in cases}
    )
    # the decisions behind similar cases and banned originals, and those that took them back
    reference_decisions = {
        decision_id
        for ev in base.values()
        for row in [*(n.reference for n in ev.neighbours), *(m.known_bad for m in ev.hash_matches)]
        for decision_id in (row.decision_id, row.withdrawn_by_decision_id)
        if decision_id
    }
    decisions = {d.id: d for d in Decision.objects.filter(id__in=reference_decisions)}
    verdicts: dict[int, LlmVerdict] = {}
    for v in LlmVerdict.objects.filter(event_id__in=list(base)).order_by("created_at", "id"):
        verdicts[v.event_id] = v  # the newest wins
    model = model_description()
    return {
        c.id: _shown(
            base[c.detection_event_id], decisions, verdicts.get(c.detection_event_id), model
        )
        for c in cases
    }


def case_evidence(case: Case) -> dict:
    return cases_evidence([case])[case.id]


def _neighbour_decision(
    ref: ReferenceItem, decision: Decision | None, taken_back_by: Decision | None
) -> str:
    if ref.withdrawn_at is not None:
        return _overturned(taken_back_by)
    if decision is not None:
        return f"{decision.get_verdict_display()}, {decision.get_action_display()}"
    return (
        "known-bad bank entry" if ref.source == ReferenceItem.Source.IMPORT else ref.decision_action
    )


def _overturned(taken_back_by: Decision | None) -> str:
    """A confirmed violation a person took back: no longer evidence of one."""
    return f"overturned ({taken_back_by.get_source_display()})" if taken_back_by else "overturned"


def _banned_original(known_bad: KnownBadImage, decisions: dict) -> dict | None:
    """The image a decision banned and that decision, for a match against a decision's entry."""
    if known_bad.source != KnownBadImage.Source.DECISION:
        return None
    decision = decisions.get(known_bad.decision_id)
    image = known_bad.image
    return {
        "decision_id": known_bad.decision_id,
        "case_id": known_bad.case_id,
        "policy": known_bad.policy,
        "action": decision.action if decision else known_bad.decision_action,
        "action_label": decision.get_action_display() if decision else known_bad.decision_action,
        "decided_at": known_bad.decided_at,
        "image_url": (
            reverse("reviews:listing_image", args=[image.id])
            if image is not None and image.state == ListingImage.State.STORED
            else None
        ),
        "withdrawn": known_bad.withdrawn_at is not None,
        "withdrawn_label": (
            _overturned(decisions.get(known_bad.withdrawn_by_decision_id))
            if known_bad.withdrawn_at is not None
            else ""
        ),
    }


def _shown(ev: EventEvidence, decisions: dict, verdict: LlmVerdict | None, model: dict) -> dict:
    neighbours = []
    for n in ev.neighbours:
        ref = n.reference
        decision = decisions.get(ref.decision_id)
        neighbours.append(
            {
                "reference_id": ref.id,
                "title": ref.title or ref.bank_ref,
                "policy": ref.policy,
                "decision": _neighbour_decision(
                    ref, decision, decisions.get(ref.withdrawn_by_decision_id)
                ),
                "overturned": ref.withdrawn_at is not None,
                "action": decision.action if decision else (ref.decision_action or "remove"),
                "decided_at": ref.decided_at or ref.created_at,
                "similarity": n.similarity,
                "case_id": ref.case_id,
                "image_url": (
                    reverse("reviews:listing_image", args=[ref.image_id])
                    if ref.image_id
                    else reverse("reviews:reference_image", args=[ref.id])
                    if ref.image_file
                    else None
                ),
                "source": ref.source,
            }
        )
    matches = [
        {
            "id": m.id,
            "kind": m.kind,
            "kind_label": m.get_kind_display(),
            "image_position": m.image.position + 1,
            "image_external_id": m.image.external_id,
            "policy": m.known_bad.policy,
            "detail": f"{m.known_bad.label or m.known_bad.bank_ref} (distance {m.distance})",
            "distance": m.distance,
            "image_id": m.image_id,
            "image_stored": m.image.state == ListingImage.State.STORED,
            "source": m.known_bad.source,
            "withdrawn": m.known_bad.withdrawn_at is not None,
            "original": _banned_original(m.known_bad, decisions),
        }
        for m in ev.hash_matches
    ]
    return {
        "images": ev.images,
        "enrichment_steps": ev.steps,
        "hash_matches": matches,
        "neighbours": neighbours,
        "neighbours_index_version": ev.index_version.version if ev.index_version else None,
        "llm_verdict": verdict,
        "model": model,
    }
