"""Enrichment through the real path: ingest → on commit → Celery tasks (eager here) → rows, files
and what the page and API show. The models are the demo weights built for the session."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client

from detection.evidence.enrichment import step_run
from detection.models import (
    EnrichmentStep,
    HashMatch,
    Heatmap,
    ImageEmbedding,
    KnownBadImage,
    Neighbour,
    ReferenceIndexVersion,
    ReferenceItem,
)
from moderation_portal.core.models import AuditEvent
from reviews.cases.intake import detections_ingest
from reviews.models import Case
from tests.conftest import api_client_for
from tests.enrichment_fixtures import event_with_photos, image_entry, jpeg_bytes, photo


def ingest(django_capture_on_commit_callbacks, *events):
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = detections_ingest(events=list(events), source="api")
    assert all(o.status == "accepted" for o in outcomes)
    return [Case.objects.get(detection_event__event_id=e["event_id"]) for e in events]


def write_bank(tmp_path, items) -> str:
    import base64

    path = tmp_path / "bank.jsonl"
    with path.open("w") as fh:
        for i, (policy, data, title) in enumerate(items):
            fh.write(
                json.dumps(
                    {
                        "id": f"kb-{i}",
                        "policy": policy,
                        "title": title,
                        "image": base64.b64encode(data).decode(),
                    }
                )
                + "\n"
            )
        fh.write("not json\n")
        fh.write(json.dumps({"id": "x", "policy": "weapons", "title": "?", "image": ""}) + "\n")
    return str(path)


@pytest.mark.django_db
def test_a_flag_gets_heatmaps_neighbours_and_hash_matches(
    with_model, eager_celery, django_capture_on_commit_callbacks, tmp_path, moderator
):
    gun = photo("firearms", seed=101)
    bag = photo("counterfeit", seed=102)
    bank = write_bank(
        tmp_path,
        [
            ("firearms", jpeg_bytes(gun.image), "Glock 19 offered for cash"),
            ("counterfeit", jpeg_bytes(bag.image), "LV replica bag"),
        ],
    )
    out = io.StringIO()
    call_command("import_known_bad", bank, stdout=out)
    assert "imported 2 known-bad images, 2 reference embeddings" in out.getvalue()
    assert "line 3: rejected" in out.getvalue()
    assert "line 4: rejected (unknown policy 'weapons')" in out.getvalue()
    call_command("build_reference_index", "--activate", stdout=io.StringIO())
    index = ReferenceIndexVersion.objects.get(is_active=True)
    assert index.size == 2
    assert index.dim > 0

    # a re-compressed, resized copy of the known-bad gun photo
    copy = gun.image.resize((280, 210))
    (case,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(jpeg_bytes(copy, quality=45), score=0.8),
    )
    states = dict(
        EnrichmentStep.objects.filter(event=case.detection_event).values_list("name", "state")
    )
    assert states == {"heatmaps": "done", "neighbours": "done", "hashes": "done"}, list(
        EnrichmentStep.objects.values_list("name", "state", "detail")
    )

    heatmap = Heatmap.objects.get(event=case.detection_event)
    assert heatmap.policy == "firearms"
    assert "Demo weights" in heatmap.model_label
    assert heatmap.overlay.read()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = np.load(io.BytesIO(heatmap.raw.read()))
    assert raw.dtype == np.float32
    assert raw.ndim == 2
    assert raw.min() >= 0.0
    assert raw.max() <= 1.0

    top, second = Neighbour.objects.filter(event=case.detection_event).order_by("rank")[:2]
    assert top.reference.title == "Glock 19 offered for cash"
    assert second.reference.title == "LV replica bag"
    assert top.similarity > second.similarity + 0.1
    assert top.index_version == index
    match = HashMatch.objects.get(event=case.detection_event)
    assert match.kind == "near"
    assert match.known_bad.label == "Glock 19 offered for cash"

    api = api_client_for(moderator).get(f"/api/v1/cases/{case.id}/").json()["enrichment"]
    assert [s["state"] for s in api["steps"]] == ["done", "done", "done"]
    assert api["neighbours"]["index_version"] == index.version
    assert api["neighbours"]["items"][0]["title"] == "Glock 19 offered for cash"
    assert api["hash_matches"][0]["kind"] == "near"
    assert api["heatmaps"][0]["policy"] == "firearms"
    assert api["model"]["configured"] is True
    assert "Demo weights" in api["model"]["label"]

    client = Client()
    client.force_login(moderator)
    page = client.get(f"/cases/{case.id}/").content.decode()
    assert 'id="neighbours"' in page
    assert "Glock 19 offered for cash" in page
    assert 'id="hash-matches"' in page
    assert 'class="heatmap"' in page
    assert "Demo weights, built locally" in page
    overlay = client.get(f"/heatmaps/{heatmap.id}/")
    assert overlay.status_code == 200
    assert overlay["Content-Type"] == "image/png"


@pytest.mark.django_db
def test_steps_are_idempotent_and_a_killed_step_runs_again(
    with_model, eager_celery, django_capture_on_commit_callbacks
):
    (case,) = ingest(
        django_capture_on_commit_callbacks, event_with_photos(jpeg_bytes(photo("drugs", 7).image))
    )
    event_id = case.detection_event_id
    counts = (Heatmap.objects.count(), ImageEmbedding.objects.count(), HashMatch.objects.count())
    # a worker died in the middle of the step: the row says running; the redelivered task
    # finishes it
    EnrichmentStep.objects.filter(event_id=event_id, name="heatmaps").update(state="running")
    Heatmap.objects.filter(event_id=event_id).delete()
    assert step_run(event_id=event_id, name="heatmaps") == "done"
    assert step_run(event_id=event_id, name="heatmaps") == "done"
    assert step_run(event_id=event_id, name="hashes") == "done"
    assert (
        Heatmap.objects.count(),
        ImageEmbedding.objects.count(),
        HashMatch.objects.count(),
    ) == counts


@pytest.mark.django_db
def test_without_a_model_or_index_the_case_is_reviewable_and_the_page_says_why(
    settings, eager_celery, django_capture_on_commit_callbacks, moderator, tmp_path
):
    settings.DETECTION_MODEL_CONFIG = str(tmp_path / "missing.json")
    (case,) = ingest(
        django_capture_on_commit_callbacks, event_with_photos(jpeg_bytes(photo("scam", 3).image))
    )
    steps = {s.name: s for s in EnrichmentStep.objects.filter(event=case.detection_event)}
    assert steps["heatmaps"].state == "skipped"
    assert "image model not configured" in steps["heatmaps"].detail
    assert steps["neighbours"].state == "skipped"
    assert "no reference index is active" in steps["neighbours"].detail
    assert steps["hashes"].state == "done"
    assert "0 known-bad images" in steps["hashes"].detail
    assert case.state == "queued"
    client = Client()
    client.force_login(moderator)
    page = client.get(f"/cases/{case.id}/evidence/").content.decode()
    assert "image model not configured" in page
    assert "not available" in page


@pytest.mark.django_db
def test_one_failing_step_does_not_block_the_others(
    with_model, eager_celery, django_capture_on_commit_callbacks
):
    from detection.models import ListingImage

    event = event_with_photos(jpeg_bytes(photo("firearms", 11).image))
    with django_capture_on_commit_callbacks(execute=False):
        detections_ingest(events=[event], source="api")
    case = Case.objects.get(detection_event__event_id=event["event_id"])
    # the stored file is damaged after ingest: steps that read it fail with the reason
    image = ListingImage.objects.get(listing=case.listing)
    with image.content.open("wb") as fh:
        fh.write(b"garbage")
    from detection.evidence.enrichment import steps_create

    steps_create(event_ids=[case.detection_event_id])
    assert step_run(event_id=case.detection_event_id, name="heatmaps") == "failed"
    assert (
        step_run(event_id=case.detection_event_id, name="neighbours") == "skipped"
    )  # no index: independent
    failed = EnrichmentStep.objects.get(event_id=case.detection_event_id, name="heatmaps")
    assert "UnidentifiedImageError" in failed.detail


@pytest.mark.django_db
def test_transient_failures_are_retried_then_recorded(
    with_model, settings, eager_celery, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    settings.TRITON_URL = f"127.0.0.1:{port}"
    settings.TRITON_TIMEOUT_SECONDS = 0.5
    ReferenceIndexVersion.objects.create(
        version="v-x",
        path="/nonexistent",
        model_version="x",
        size=1,
        dim=2,
        build_seconds=0,
        manifest={},
        is_active=True,
    )
    event = event_with_photos(jpeg_bytes(photo("drugs", 5).image))
    with django_capture_on_commit_callbacks(execute=False):
        detections_ingest(events=[event], source="api")
    event_id = Case.objects.get(detection_event__event_id=event["event_id"]).detection_event_id
    from detection.evidence.vectors import StepTransient

    with pytest.raises(StepTransient):
        step_run(event_id=event_id, name="neighbours", final_attempt=False)
    step = EnrichmentStep.objects.get(event_id=event_id, name="neighbours")
    assert step.state == "pending"
    assert "retrying" in step.detail
    assert "Triton" in step.detail
    assert step_run(event_id=event_id, name="neighbours", final_attempt=True) == "failed"
    step.refresh_from_db()
    assert "gave up after retries" in step.detail
    assert step.attempts == 2


@pytest.mark.django_db
def test_confirmed_violations_become_references_and_index_versions_roll_back(
    with_model, eager_celery, django_capture_on_commit_callbacks, moderator
):
    cases = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(jpeg_bytes(photo("firearms", 21).image), score=0.6),
        event_with_photos(jpeg_bytes(photo("firearms", 22).image), score=0.6),
    )
    client = api_client_for(moderator)
    for _ in cases:
        case_id = client.post("/api/v1/cases/claim-next/").json()["id"]
        with django_capture_on_commit_callbacks(execute=True):
            client.post(
                f"/api/v1/cases/{case_id}/decision/",
                {"verdict": "violation", "policy": "firearms", "action": "remove"},
                format="json",
            )
    refs = ReferenceItem.objects.filter(source="decision")
    assert refs.count() == 2
    assert set(refs.values_list("case_id", flat=True)) == {c.id for c in cases}
    call_command("build_reference_index", stdout=io.StringIO())
    call_command("build_reference_index", "--activate", stdout=io.StringIO())
    first, second = ReferenceIndexVersion.objects.order_by("created_at")
    assert not first.is_active
    assert second.is_active
    assert first.version != second.version
    out = io.StringIO()
    call_command("activate_reference_index", first.version, stdout=out)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.is_active
    assert not second.is_active
    # every activation is audited, whichever way it came: build --activate, then the rollback
    activations = AuditEvent.objects.filter(action="reference_index_activated").order_by("id")
    assert [a.data for a in activations] == [
        {"version": second.version, "previous": None},
        {"version": first.version, "previous": second.version},
    ]
    # a new flag records the version its neighbours came from
    (new,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(jpeg_bytes(photo("firearms", 23).image)),
    )
    assert set(
        Neighbour.objects.filter(event=new.detection_event).values_list("index_version", flat=True)
    ) == {first.id}


@pytest.mark.django_db
def test_known_bad_import_without_a_model_keeps_hashes(settings, tmp_path):
    settings.DETECTION_MODEL_CONFIG = str(tmp_path / "missing.json")
    out = io.StringIO()
    call_command(
        "import_known_bad",
        write_bank(tmp_path, [("drugs", jpeg_bytes(photo("drugs", 1).image), "pills")]),
        stdout=out,
    )
    assert "imported 1 known-bad images, 0 reference embeddings" in out.getvalue()
    assert "no embeddings: image model not configured" in out.getvalue()
    assert KnownBadImage.objects.count() == 1
    assert ReferenceItem.objects.count() == 0


def test_image_entry_helper_is_consistent():
    data = b"\x89PNG fake"
    entry = image_entry(data)
    import base64
    import hashlib

    assert base64.b64decode(entry["data"]) == data
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
