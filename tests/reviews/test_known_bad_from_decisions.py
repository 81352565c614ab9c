"""Known-bad images from decisions, on PostgreSQL through the real paths: a moderator's removal
puts the listing's photo into the hash bank (after commit, through the reference task); a
resized, re-compressed re-upload by another seller matches it in the real hash step and is routed
by the active ladder's rule; an overturn on appeal or a QA correction takes the photo out again,
and what was shown before says so."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from detection.evidence.enrichment import step_run, steps_create
from detection.evidence.references import reference_index_build, references_add_for_decision
from detection.models import EvidenceWithdrawal, HashMatch, KnownBadImage, ReferenceItem
from moderation_portal.core.models import AuditEvent
from reviews.cases.intake import detections_ingest
from reviews.cases.known_bad import known_bad_route
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec
from reviews.enforcement.models import Enforcement
from reviews.models import Case
from reviews.policies.models import LadderVersion
from reviews.policies.services import ladder_active
from reviews.qa.models import QaSample
from reviews.qa.services import qa_claim_next, qa_review_record
from tests.conftest import api_client_for
from tests.enrichment_fixtures import event_with_photos, jpeg_bytes, photo

THRESHOLD_NOTE = "pHash threshold 10"


@pytest.fixture
def no_model(settings, tmp_path):
    """Hashes need no model: the image model and the index stay unconfigured (and fast)."""
    settings.DETECTION_MODEL_CONFIG = str(tmp_path / "missing.json")
    settings.TRITON_URL = None


def ingest(callbacks, *events):
    with callbacks(execute=True):
        outcomes = detections_ingest(events=list(events), source="api")
    assert [o.status for o in outcomes] == ["accepted"] * len(events)
    return [Case.objects.get(detection_event__event_id=e["event_id"]) for e in events]


def banned_removal(callbacks, moderator, gun, seller="seller-banned") -> Decision:
    """A moderator claims the flag with `gun` and removes it: a confirmed violation."""
    (case,) = ingest(callbacks, event_with_photos(jpeg_bytes(gun.image), score=0.6, seller=seller))
    api = api_client_for(moderator)
    assert api.post("/api/v1/cases/claim-next/").json()["id"] == case.id
    with callbacks(execute=True):
        response = api.post(
            f"/api/v1/cases/{case.id}/decision/",
            {"verdict": "violation", "policy": "firearms", "action": "remove"},
            format="json",
        )
    assert response.status_code in (200, 201), response.json()
    return Decision.objects.get(case=case, source="human")


def reupload(gun) -> bytes:
    """The same photo, smaller and re-compressed: different bytes, near the same pHash."""
    return jpeg_bytes(gun.image.resize((280, 210)), quality=45)


def set_known_bad_rule(policy: str, rule: str) -> None:
    ladder = ladder_active()
    rules = {code: dict(row) for code, row in (ladder.repeat_rules or {}).items()}
    rules[policy] = {**rules.get(policy, {}), "known_bad": rule}
    LadderVersion.objects.filter(pk=ladder.pk).update(repeat_rules=rules)


def hashes_detail(case: Case) -> str:
    return case.detection_event.enrichment_steps.get(name="hashes").detail


def routed_audits(case: Case) -> list[dict]:
    return list(
        AuditEvent.objects.filter(
            action="known_bad_match_routed", object_type="case", object_id=str(case.id)
        ).values_list("data", flat=True)
    )


@pytest.mark.django_db
def test_a_removed_photo_joins_the_bank_and_its_reuploads_go_to_the_top_of_the_queue(
    no_model, eager_celery, django_capture_on_commit_callbacks, moderator, moderator2
):
    gun = photo("firearms", seed=101)
    removal = banned_removal(django_capture_on_commit_callbacks, moderator, gun)
    original = removal.case.listing.images.get()
    entry = KnownBadImage.objects.get()
    assert (
        entry.source,
        entry.decision_id,
        entry.case_id,
        entry.image_id,
        entry.policy,
        entry.decision_action,
        entry.decided_at,
        entry.withdrawn_at,
    ) == (
        "decision",
        removal.pk,
        removal.case_id,
        original.id,
        "firearms",
        "remove",
        removal.created_at,
        None,
    )
    assert entry.sha256 == original.sha256
    assert len(entry.reference_hashes) == 6  # the crops that make matching crop-robust
    added = AuditEvent.objects.get(action="known_bad_added")
    assert (added.object_type, added.object_id, added.trace_id) == (
        "knownbadimage",
        str(entry.pk),
        removal.case.trace_id,
    )
    assert added.data["decision_id"] == removal.pk
    assert added.data["bank_version"] == 1

    ordinary, queued, monitored = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(
            jpeg_bytes(photo("counterfeit", 102).image), score=0.68, seller="s-plain"
        ),
        event_with_photos(reupload(gun), score=0.55, seller="s-again"),
        event_with_photos(reupload(gun), score=0.4, seller="s-monitor"),
    )
    assert ordinary.route == "human_review"
    opened = AuditEvent.objects.get(action="case_opened", object_id=str(monitored.id))
    assert opened.data["route"] == "monitor"  # the ladder closed it before the hash step ran
    for case in (queued, monitored):
        case.refresh_from_db()
        match = HashMatch.objects.get(event=case.detection_event)
        assert (match.known_bad_id, match.kind) == (entry.pk, "near")
        assert match.distance <= 10  # different bytes, (near) the same picture
        assert (
            hashes_detail(case) == f"1 match against 1 known-bad images (bank v1, {THRESHOLD_NOTE})"
        )
        assert case.state == "queued"
        assert case.route == "human_review"
        assert (
            f"re-upload of an image banned by decision {removal.pk} (firearms" in case.route_reason
        )
    assert HashMatch.objects.filter(event=ordinary.detection_event).count() == 0
    assert [a["outcome"] for a in routed_audits(queued)] == ["top_of_queue"]
    assert [(a["outcome"], a["from_state"], a["from_route"]) for a in routed_audits(monitored)] == [
        ("reopened", "closed", "monitor")
    ]
    assert routed_audits(queued)[0]["banned_by_decision_id"] == removal.pk
    # both re-uploads before the ordinary case with the higher score, in their own order
    waiting = list(Case.objects.filter(state="queued").order_by("priority_key", "id"))
    assert [c.id for c in waiting] == [queued.id, monitored.id, ordinary.id]
    claimed = api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()
    assert claimed["id"] == queued.id

    # the signal may fire twice: nothing changes again
    before = Case.objects.filter(id__in=[queued.id, monitored.id]).values_list(
        "id", "state", "priority_key", "route_reason"
    )
    before = sorted(before)
    assert known_bad_route(event_id=queued.detection_event_id) is None
    assert known_bad_route(event_id=monitored.detection_event_id) is None
    assert (
        sorted(
            Case.objects.filter(id__in=[queued.id, monitored.id]).values_list(
                "id", "state", "priority_key", "route_reason"
            )
        )
        == before
    )
    assert AuditEvent.objects.filter(action="known_bad_match_routed").count() == 2

    # the case shows the banned original beside the matched image, with its decision
    client = Client()
    client.force_login(moderator2)
    page = client.get(f"/cases/{monitored.id}/").content.decode()
    matched = monitored.listing.images.get()
    assert (
        f'<img class="photo concealed" src="{reverse("reviews:listing_image", args=[matched.id])}"'
        in page
    )
    assert (
        f'<img class="photo concealed" src="{reverse("reviews:listing_image", args=[original.id])}"'
        ' alt="the banned original' in page
    )
    assert f'data-known-bad-decision="{removal.pk}"' in page
    assert (
        f"banned original: remove listing · firearms · {removal.created_at:%Y-%m-%d} · "
        f'<a href="{reverse("reviews:case", args=[removal.case_id])}">case {removal.case_id}</a>'
        in page
    )
    api = api_client_for(moderator2).get(f"/api/v1/cases/{monitored.id}/").json()
    (shown,) = api["enrichment"]["hash_matches"]
    assert (shown["source"], shown["withdrawn"]) == ("decision", False)
    assert {k: shown["original"][k] for k in ("decision_id", "case_id", "policy", "action")} == {
        "decision_id": removal.pk,
        "case_id": removal.case_id,
        "policy": "firearms",
        "action": "remove",
    }
    assert api["routing"]["route"] == "human_review"


@pytest.mark.django_db
def test_the_auto_remove_rule_removes_a_reupload_nobody_holds(
    no_model, eager_celery, django_capture_on_commit_callbacks, moderator, moderator2
):
    gun = photo("firearms", seed=103)
    removal = banned_removal(django_capture_on_commit_callbacks, moderator, gun)
    set_known_bad_rule("firearms", "auto_remove")
    # scored as drugs by the detection tier: the removal follows the banned image's policy
    (case,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(reupload(gun), score=0.55, seller="s-auto", policy="drugs"),
    )
    case.refresh_from_db()
    automatic = Decision.objects.get(case=case)
    assert (automatic.source, automatic.verdict, automatic.policy_id, automatic.action) == (
        "automatic",
        "violation",
        "firearms",
        "remove",
    )
    assert f"re-upload of an image banned by decision {removal.pk}" in automatic.notes
    assert automatic.ladder_version == ladder_active()
    assert (case.state, case.route) == ("closed", "auto_action")
    assert case.decided_at is not None
    assert Enforcement.objects.filter(decision=automatic, action="remove_listing").count() == 1
    (audit,) = routed_audits(case)
    assert (audit["rule"], audit["outcome"], audit["removal_decision_id"]) == (
        "auto_remove",
        "auto_removed",
        automatic.pk,
    )
    # a machine's removal is not a person's confirmation: the bank does not grow from it
    assert KnownBadImage.objects.count() == 1
    assert known_bad_route(event_id=case.detection_event_id) is None
    assert Decision.objects.filter(case=case).count() == 1

    # one a moderator holds is left to them (at the top, should they give it back)
    event = event_with_photos(reupload(gun), score=0.55, seller="s-held")
    with django_capture_on_commit_callbacks(execute=False):
        detections_ingest(events=[event], source="api")
    held = Case.objects.get(detection_event__event_id=event["event_id"])
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"] == held.id
    steps_create(event_ids=[held.detection_event_id])
    assert step_run(event_id=held.detection_event_id, name="hashes") == "done"
    held.refresh_from_db()
    assert held.state == "claimed"
    assert not Decision.objects.filter(case=held).exists()
    assert held.priority_key.year < 1970
    assert [a["outcome"] for a in routed_audits(held)] == ["left_to_moderator"]


@pytest.mark.django_db
def test_the_show_rule_only_shows_the_match(
    no_model, eager_celery, django_capture_on_commit_callbacks, moderator
):
    gun = photo("firearms", seed=104)
    banned_removal(django_capture_on_commit_callbacks, moderator, gun)
    set_known_bad_rule("firearms", "show")
    (case,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(reupload(gun), score=0.4, seller="s-show"),
    )
    case.refresh_from_db()
    assert HashMatch.objects.filter(event=case.detection_event).count() == 1
    assert (case.state, case.route) == ("closed", "monitor")
    assert routed_audits(case) == []


@pytest.mark.django_db
def test_an_overturn_on_appeal_takes_the_photo_out_of_the_bank_and_the_references(
    with_model,
    eager_celery,
    django_capture_on_commit_callbacks,
    moderator,
    appeals_staff,
    marketplace_client,
):
    gun = photo("firearms", seed=105)
    removal = banned_removal(django_capture_on_commit_callbacks, moderator, gun)
    reference = ReferenceItem.objects.get(source="decision")
    assert reference.decision_id == removal.pk
    index = reference_index_build(activate=True)
    (seen_before,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(reupload(gun), score=0.55, seller="s-before"),
    )
    assert HashMatch.objects.filter(event=seen_before.detection_event).count() == 1
    client = Client()
    client.force_login(moderator)
    neighbours = api_client_for(moderator).get(f"/api/v1/cases/{seen_before.id}/").json()
    (neighbour,) = neighbours["enrichment"]["neighbours"]["items"]
    assert (neighbour["case_id"], neighbour["overturned"]) == (removal.case_id, False)
    assert neighbour["decision"] == "violation, remove listing"

    enforcement = Enforcement.objects.get(decision=removal, action="remove_listing")
    appeal = marketplace_client.post(
        "/api/v1/appeals/",
        {
            "appeal_id": "ap-known-bad",
            "enforcement_id": enforcement.pk,
            "seller_id": "seller-banned",
            "statement": "It is a replica <b>toy</b>.",
            "submitted_at": timezone.now().isoformat(),
        },
        format="json",
    )
    assert appeal.status_code == 201, appeal.json()
    staff = api_client_for(appeals_staff)
    assert staff.post("/api/v1/appeals/claim-next/").json()["id"] == appeal.json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        decided = staff.post(
            f"/api/v1/appeals/{appeal.json()['id']}/decision/",
            {"outcome": "overturn", "notes": "The photo shows a replica with an orange tip."},
            format="json",
        )
    assert decided.status_code == 200, decided.json()
    overturn = Decision.objects.get(pk=decided.json()["overturn_decision_id"])

    entry = KnownBadImage.objects.get()
    reference.refresh_from_db()
    assert (entry.withdrawn_by_decision_id, reference.withdrawn_by_decision_id) == (
        overturn.pk,
        overturn.pk,
    )
    assert entry.withdrawn_at is not None
    assert reference.withdrawn_at == entry.withdrawn_at
    assert entry.withdrawn_reason == f"appeal decision {overturn.pk}: no violation"
    withdrawn = AuditEvent.objects.get(action="known_bad_withdrawn")
    assert (withdrawn.object_id, withdrawn.trace_id) == (str(entry.pk), removal.case.trace_id)
    assert withdrawn.data == {
        "bank_version": 2,
        "decision_id": removal.pk,
        "withdrawn_by_decision_id": overturn.pk,
        "reason": entry.withdrawn_reason,
        "policy": "firearms",
        "sha256": entry.sha256,
    }
    ref_audit = AuditEvent.objects.get(action="reference_withdrawn")
    assert (ref_audit.object_type, ref_audit.object_id) == ("referenceitem", str(reference.pk))
    assert ref_audit.data["withdrawn_by_decision_id"] == overturn.pk

    # what was stored before the overturn now says so
    page = client.get(f"/cases/{seen_before.id}/evidence/").content.decode()
    assert '<figure class="neighbour overturned">' in page
    assert "overturned (appeal)" in page
    assert "<b>overturned (appeal)</b>: no longer banned" in page
    after = api_client_for(moderator).get(f"/api/v1/cases/{seen_before.id}/").json()["enrichment"]
    (neighbour,) = after["neighbours"]["items"]
    assert (neighbour["overturned"], neighbour["decision"]) == (True, "overturned (appeal)")
    assert after["hash_matches"][0]["withdrawn"] is True

    # a new re-upload matches nothing and finds no neighbour in the same index version
    (later,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(reupload(gun), score=0.55, seller="s-after"),
    )
    later.refresh_from_db()
    assert HashMatch.objects.filter(event=later.detection_event).count() == 0
    assert (
        hashes_detail(later) == f"0 matches against 0 known-bad images (bank v2, {THRESHOLD_NOTE})"
    )
    assert later.detection_event.neighbours.count() == 0
    assert later.detection_event.enrichment_steps.get(name="neighbours").detail == (
        f"0 from index {index.version}"
    )
    assert later.priority_key.year > 2000
    assert routed_audits(later) == []
    # a new index version leaves it out too, and a late reference task cannot add it back live
    with pytest.raises(ValueError, match="no reference embeddings"):
        reference_index_build()
    assert (
        references_add_for_decision(
            decision_id=removal.pk,
            case_id=removal.case_id,
            event_id=removal.case.detection_event_id,
            policy="firearms",
            action="remove",
            decided_at=removal.created_at,
        )
        == 0
    )
    assert KnownBadImage.objects.filter(withdrawn_at__isnull=True).count() == 0
    assert ReferenceItem.objects.filter(withdrawn_at__isnull=True).count() == 0
    assert EvidenceWithdrawal.objects.get().withdrawn_by_decision_id == overturn.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("verdict", "policy", "action", "withdrawn", "matched_policies"),
    [
        ("no_violation", None, "none", True, []),
        ("violation", "drugs", "remove", True, ["drugs"]),
        ("violation", "firearms", "warn", False, ["firearms", "firearms"]),
    ],
)
def test_a_qa_correction_takes_the_photo_out_unless_it_keeps_the_policy(
    no_model,
    eager_celery,
    django_capture_on_commit_callbacks,
    moderator,
    qa_lead,
    verdict,
    policy,
    action,
    withdrawn,
    matched_policies,
):
    gun = photo("firearms", seed=106)
    removal = banned_removal(django_capture_on_commit_callbacks, moderator, gun)
    QaSample.objects.get_or_create(
        decision=removal,
        defaults={"case": removal.case, "policy": "firearms", "reason": "human", "band": "test"},
    )
    sample = qa_claim_next(user=qa_lead)
    assert sample.decision_id == removal.pk
    with django_capture_on_commit_callbacks(execute=True):
        review = qa_review_record(
            sample=sample,
            user=qa_lead,
            outcome="correct",
            spec=DecisionSpec(verdict=verdict, policy=policy, action=action, notes="QA says so"),
        )
    entry = KnownBadImage.objects.get(decision_id=removal.pk)
    assert (entry.withdrawn_at is not None) == withdrawn
    assert entry.withdrawn_by_decision_id == (review.correction_id if withdrawn else None)
    assert AuditEvent.objects.filter(action="known_bad_withdrawn").count() == int(withdrawn)
    (case,) = ingest(
        django_capture_on_commit_callbacks,
        event_with_photos(reupload(gun), score=0.55, seller="s-qa"),
    )
    matches = HashMatch.objects.filter(event=case.detection_event).select_related("known_bad")
    assert sorted(m.known_bad.policy for m in matches) == matched_policies
    assert {m.known_bad.decision_id for m in matches} <= {removal.pk, review.correction_id}
    case.refresh_from_db()
    assert (case.priority_key.year < 1970) == bool(matched_policies)
