"""A case with every kind of evidence present (heatmaps, neighbours, hash matches, an LLM
verdict, earlier cases), written directly as rows: for page tests and the review-page benchmark,
which measure the page, not the models."""

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from detection.models import (
    EnrichmentStep,
    HashMatch,
    Heatmap,
    KnownBadImage,
    ListingImage,
    Neighbour,
    ReferenceIndexVersion,
    ReferenceItem,
)
from llm_verify.models import LlmVerdict
from reviews.models import Case

_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00"
    b"\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)


def evidence_fill(case: Case, *, images: int, neighbours: int) -> None:
    event = case.detection_event
    overlay = default_storage.save("heatmaps/fixture.png", ContentFile(_PNG))
    stored = list(ListingImage.objects.filter(listing=case.listing))
    for i in range(len(stored), images):
        stored.append(
            ListingImage.objects.create(
                listing=case.listing,
                external_id=f"extra-{i}",
                position=i,
                sha256="0" * 64,
                content=stored[0].content.name if stored else overlay,
                content_type="image/png",
                width=1,
                height=1,
            )
        )
    index = ReferenceIndexVersion.objects.filter(
        version="fixture"
    ).first() or ReferenceIndexVersion.objects.create(
        version="fixture",
        path="/nonexistent",
        model_version="fixture",
        size=neighbours,
        dim=4,
        build_seconds=0,
        manifest={},
        is_active=False,
    )
    vec = np.ones(4, dtype=np.float32).tobytes()
    for image in stored[:images]:
        Heatmap.objects.get_or_create(
            image=image,
            event=event,
            policy=case.policy_id,
            model_version="fixture",
            defaults={
                "model_label": "fixture",
                "overlay": overlay,
                "raw": overlay,
                "probability": 0.8,
                "peak_x": 1,
                "peak_y": 1,
            },
        )
    for rank in range(1, neighbours + 1):
        ref = ReferenceItem.objects.create(
            source="import",
            policy=case.policy_id,
            title=f"known violation {rank}",
            bank_ref=f"fixture-{case.id}-{rank}",
            image_file=overlay,
            model_version="fixture",
            vector=vec,
            decided_at=timezone.now(),
        )
        Neighbour.objects.create(
            event=event,
            index_version=index,
            rank=rank,
            reference=ref,
            image=stored[0],
            similarity=1 - rank / 100,
        )
    known = KnownBadImage.objects.create(
        sha256="1" * 64, phash=7, policy=case.policy_id, label="fixture known-bad"
    )
    for image in stored[:images]:
        HashMatch.objects.get_or_create(
            event=event, image=image, known_bad=known, defaults={"kind": "near", "distance": 3}
        )
    for name in ("heatmaps", "neighbours", "hashes"):
        EnrichmentStep.objects.update_or_create(
            event=event, name=name, defaults={"state": "done", "detail": "fixture"}
        )
    verdict = LlmVerdict.objects.create(
        event=event,
        status="ok",
        decision="violation",
        policy=case.policy_id,
        confidence=0.9,
        rationale="fixture rationale",
        evidence=[{"kind": "listing_text", "quote": "fixture", "note": "n"}],
        recommended_action="remove",
        model="fixture",
        prompt_version="verify-v1",
        context={},
    )
    Case.objects.filter(id=case.id).update(llm_verdict=verdict, llm_state="done")
