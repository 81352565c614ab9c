"""Everything the review page shows about a case beyond the listing: one place, a fixed number
of queries however many images, heatmaps or neighbours there are."""

from reviews.models import Case


def case_evidence(case: Case) -> dict:
    images = list(case.listing.images.all())
    for image in images:
        image.heatmaps_for_case = []
    return {
        "images": images,
        "enrichment_steps": [],
        "hash_matches": [],
        "neighbours": [],
        "neighbours_index_version": None,
        "llm_verdict": None,
    }
