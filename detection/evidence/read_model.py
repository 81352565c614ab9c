"""The one read model of a flag's evidence: what the review page, the case API and the LLM's
context all show, so a moderator and the LLM never see different "similar cases".

A fixed number of queries however many events, images, heatmaps or neighbours there are.
Neighbours come from one index version per event: the newest that produced any (the latest
enrichment), never a mix of versions.
"""

from dataclasses import dataclass, field

from detection.evidence.enrichment import STEPS
from detection.models import (
    EnrichmentStep,
    HashMatch,
    Heatmap,
    ListingImage,
    Neighbour,
    ReferenceIndexVersion,
)

STEP_LABELS = dict(EnrichmentStep.Name.choices)
NOT_APPLICABLE = "not_applicable"


@dataclass
class EventEvidence:
    images: list[ListingImage] = field(default_factory=list)  # each with `.heatmaps_for_case`
    steps: list[dict] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)  # reference and index_version joined
    index_version: ReferenceIndexVersion | None = None
    # known_bad (with the banned original's image) and image joined
    hash_matches: list[HashMatch] = field(default_factory=list)


def evidence_for_events(*, events: dict[int, tuple[int, bool]]) -> dict[int, EventEvidence]:
    """`events` maps a DetectionEvent id to (its listing id, whether it is enriched at all)."""
    out = {event_id: EventEvidence() for event_id in events}
    if not events:
        return out
    ids = list(events)
    images_by_listing: dict[int, list[ListingImage]] = {}
    for image in ListingImage.objects.filter(
        listing_id__in={listing for listing, _ in events.values()}
    ):
        images_by_listing.setdefault(image.listing_id, []).append(image)
    heatmaps: dict[tuple[int, int], list[Heatmap]] = {}
    for hm in Heatmap.objects.filter(event_id__in=ids).order_by("id"):
        heatmaps.setdefault((hm.event_id, hm.image_id), []).append(hm)
    steps: dict[int, dict] = {}
    for step in EnrichmentStep.objects.filter(event_id__in=ids):
        steps.setdefault(step.event_id, {})[step.name] = step
    neighbours: dict[int, list[Neighbour]] = {}
    for n in (
        Neighbour.objects.filter(event_id__in=ids)
        .select_related("reference", "index_version")
        .order_by("event_id", "-index_version__created_at", "-index_version_id", "rank")
    ):
        neighbours.setdefault(n.event_id, []).append(n)
    matches: dict[int, list[HashMatch]] = {}
    for m in (
        HashMatch.objects.filter(event_id__in=ids)
        .select_related("known_bad__image", "image")
        .order_by("distance", "id")
    ):
        matches.setdefault(m.event_id, []).append(m)

    for event_id, (listing_id, enriched) in events.items():
        evidence = out[event_id]
        for image in images_by_listing.get(listing_id, []):
            # a copy per event: the same listing can have several flags with different heatmaps
            shown = ListingImage(
                **{f.attname: getattr(image, f.attname) for f in ListingImage._meta.concrete_fields}
            )
            shown.heatmaps_for_case = heatmaps.get((event_id, image.id), [])
            evidence.images.append(shown)
        evidence.steps = [
            _step_row(name, steps.get(event_id, {}).get(name), enriched) for name in STEPS
        ]
        rows = neighbours.get(event_id, [])
        if rows:
            evidence.index_version = rows[0].index_version
            evidence.neighbours = [
                n for n in rows if n.index_version_id == evidence.index_version.id
            ]
        evidence.hash_matches = matches.get(event_id, [])
    return out


def _step_row(name: str, step: EnrichmentStep | None, enriched: bool) -> dict:
    if step is None:
        state, detail = (
            ("pending", "queued")
            if enriched
            else (NOT_APPLICABLE, "not enriched (routed to allow)")
        )
    else:
        state, detail = step.state, step.detail
    label = (
        EnrichmentStep.State(state).label
        if state in EnrichmentStep.State.values
        else "not applicable"
    )
    return {
        "name": str(name),
        "label": STEP_LABELS[name],
        "state": state,
        "state_label": label,
        "detail": detail,
    }
