"""Training labels through the real judgement paths on PostgreSQL: moderator decisions, QA
agreement and corrections, appeal overturns, labeling answers; supersession keeps the history;
machine decisions nobody confirmed never become training labels."""

import hashlib
import hmac
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from active_learning.labeling.models import LabelingDraw, LabelingItem
from active_learning.labels.models import Label
from active_learning.labels.services import label_from_labeling_item, labels_rebuild
from reviews.cases.claims import case_claim_next, case_decide
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec
from reviews.qa import services as qa_services
from reviews.qa.models import QaSample
from tests.conftest import api_client_for
from tests.llm_verify.conftest import Reply
from tests.reviews.conftest import llm  # noqa: F401 (fixture)
from tests.reviews.helpers import open_cases
from tests.reviews.test_appeals import body, post, removal
from tests.reviews.test_llm_routing import run_case, verdict
from tests.reviews.test_qa import ladder_with_qa_rate

VIOLATION = DecisionSpec(verdict="violation", policy="firearms", action="remove")
NOT_VIOLATING = DecisionSpec(verdict="no_violation", policy=None, action="none")


def decide(user, case, spec=VIOLATION) -> Decision:
    claimed = case_claim_next(user=user)
    assert claimed.pk == case.pk
    return case_decide(case=claimed, user=user, spec=spec)


def expected_pseudonym(user_id: int, key: str) -> str:
    return "rev-" + hmac.new(key.encode(), f"user:{user_id}".encode(), "sha256").hexdigest()[:12]


def fields(label: Label) -> tuple:
    return (label.policy, label.label, label.kind, label.source, label.for_training)


@pytest.mark.django_db
def test_a_moderators_violation_is_a_positive_with_its_provenance(moderator, settings):
    settings.LABEL_PSEUDONYM_KEY = "pseudonym-test-key"
    (case,) = open_cases(0.6, title="Glock 19", description="No papers.")
    decision = decide(moderator, case)
    label = Label.objects.get()
    assert fields(label) == ("firearms", 1, "positive", "human", True)
    assert label.label_id == f"lbl-d{decision.pk}-firearms"
    assert label.decided_by == expected_pseudonym(moderator.pk, "pseudonym-test-key")
    assert "mod-ana" not in label.decided_by
    image_sha = case.listing.images.get().sha256
    canonical = json.dumps(
        {"description": "No papers.", "images": [image_sha], "title": "Glock 19"},
        separators=(",", ":"),
    )
    assert label.content_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert (label.listing_id, label.event_id, label.decision_id) == (
        case.listing_id,
        case.detection_event_id,
        decision.pk,
    )
    assert (label.model_name, label.model_version, label.score, label.ladder_version) == (
        "listing-guard",
        "2026.11.1",
        0.6,
        1,
    )
    assert (label.trace_id, label.decided_at) == (case.trace_id, decision.created_at)
    assert (label.llm_model, label.prompt_version, label.sampling_strategy) == ("", "", "")
    assert (label.is_current, label.supersedes, label.qa_agreement) == (True, None, None)


@pytest.mark.django_db
def test_not_violating_is_a_hard_negative_unless_the_flag_was_a_random_sample(moderator):
    (sampled,) = open_cases(0.55, sample=True)
    assert sampled.detection_event.is_sample is True
    decide(moderator, sampled, NOT_VIOLATING)
    (flagged,) = open_cases(0.6)
    decide(moderator, flagged, NOT_VIOLATING)
    kinds = {
        lbl.listing_id: (lbl.label, lbl.kind) for lbl in Label.objects.filter(for_training=True)
    }
    assert kinds == {
        sampled.listing_id: (0, "easy_negative"),
        flagged.listing_id: (0, "hard_negative"),
    }


@pytest.mark.django_db
def test_automatic_decisions_are_labels_but_never_training_labels():
    cases = open_cases(0.97, 0.99)
    assert Decision.objects.filter(source="automatic").count() == 2
    labels = list(Label.objects.order_by("id"))
    assert [fields(lbl) for lbl in labels] == [("firearms", 1, "positive", "automatic", False)] * 2
    assert {lbl.listing_id for lbl in labels} == {c.listing_id for c in cases}
    assert all(lbl.decided_by == "" and lbl.is_current for lbl in labels)
    assert not Label.objects.filter(for_training=True).exists()


@pytest.mark.django_db
def test_a_qa_correction_supersedes_and_the_history_stays(moderator, qa_lead, settings):
    settings.QA_HUMAN_SAMPLE_RATE = 1.0
    (case,) = open_cases(0.6)
    original = decide(moderator, case)
    sample = qa_services.qa_claim_next(user=qa_lead)
    assert sample.decision == original
    qa_services.qa_review_record(sample=sample, user=qa_lead, outcome="correct", spec=NOT_VIOLATING)
    correction = Decision.objects.get(source="qa_correction")
    old, new = Label.objects.filter(listing=case.listing).order_by("id")
    assert fields(old) == ("firearms", 1, "positive", "human", True)
    assert fields(new) == ("firearms", 0, "hard_negative", "qa_correction", True)
    assert (old.is_current, old.qa_agreement, old.decision_id) == (False, False, original.pk)
    assert (new.is_current, new.supersedes, new.decision_id) == (True, old, correction.pk)
    assert new.decided_by == expected_pseudonym(qa_lead.pk, settings.LABEL_PSEUDONYM_KEY)
    assert Label.objects.filter(for_training=True, is_current=True).count() == 1


@pytest.mark.django_db
def test_qa_agreement_marks_the_label_and_confirms_a_machine_decision(
    moderator, qa_lead, policy_admin, settings
):
    settings.QA_HUMAN_SAMPLE_RATE = 1.0
    ladder_with_qa_rate(policy_admin, 1.0)
    (automatic,) = open_cases(0.96)
    (human,) = open_cases(0.6)
    decide(moderator, human)
    assert QaSample.objects.count() == 2
    for _ in range(2):
        sample = qa_services.qa_claim_next(user=qa_lead)
        qa_services.qa_review_record(sample=sample, user=qa_lead, outcome="agree")
    human_label = Label.objects.get(listing=human.listing)
    assert (fields(human_label), human_label.qa_agreement) == (
        ("firearms", 1, "positive", "human", True),
        True,
    )
    machine, confirmed = Label.objects.filter(listing=automatic.listing).order_by("id")
    assert (fields(machine), machine.qa_agreement, machine.is_current) == (
        ("firearms", 1, "positive", "automatic", False),
        True,
        False,  # a person has judged the pair since: no longer an unconfirmed machine label
    )
    assert fields(confirmed) == ("firearms", 1, "positive", "qa_confirmed", True)
    assert confirmed.decision_id == machine.decision_id
    assert confirmed.decided_by == expected_pseudonym(qa_lead.pk, settings.LABEL_PSEUDONYM_KEY)
    assert (confirmed.is_current, confirmed.qa_agreement) == (True, True)


@pytest.mark.django_db
def test_an_overturned_removal_becomes_a_hard_negative_from_the_appeal(
    marketplace_client, appeals_staff
):
    enforcement = removal(seller="seller-label")
    machine = Label.objects.get()
    assert fields(machine) == ("firearms", 1, "positive", "automatic", False)
    appeal_id = post(marketplace_client, body(enforcement)).json()["id"]
    api = api_client_for(appeals_staff)
    assert api.post("/api/v1/appeals/claim-next/").json()["id"] == appeal_id
    response = api.post(
        f"/api/v1/appeals/{appeal_id}/decision/",
        {"outcome": "overturn", "notes": "A toy with an orange tip."},
        format="json",
    )
    assert response.status_code == 200, response.json()
    overturn = response.json()["overturn_decision_id"]
    machine.refresh_from_db()
    label = Label.objects.get(for_training=True)
    assert fields(label) == ("firearms", 0, "hard_negative", "appeal", True)
    assert (label.decision_id, label.is_current, label.supersedes) == (overturn, True, None)
    assert machine.is_current is False


@pytest.mark.django_db
def test_a_later_flag_of_the_same_listing_supersedes_per_policy(moderator, moderator2):
    (first,) = open_cases(0.6, listing="same-listing")
    decide(moderator, first)
    (second,) = open_cases(0.7, listing="same-listing")
    decide(moderator2, second, DecisionSpec(verdict="violation", policy="drugs", action="warn"))
    (third,) = open_cases(0.65, listing="same-listing")
    decide(moderator, third, NOT_VIOLATING)
    chain = list(Label.objects.filter(for_training=True).order_by("id"))
    assert [fields(lbl) for lbl in chain] == [
        ("firearms", 1, "positive", "human", True),
        ("drugs", 1, "positive", "human", True),
        ("firearms", 0, "hard_negative", "human", True),
    ]
    assert [lbl.is_current for lbl in chain] == [False, True, True]
    assert chain[2].supersedes == chain[0]
    assert chain[1].supersedes is None


@pytest.mark.django_db
def test_a_labeling_answer_carries_strategy_and_inclusion_probability(moderator):
    monitored, flagged = open_cases(0.4, 0.6)
    assert monitored.route == "monitor"
    draw = LabelingDraw.objects.create(day=timezone.localdate(), budget=3, shares={})
    now = timezone.now()

    def answered(case, answer, rank, strategy="uncertainty", p=0.25):
        return LabelingItem.objects.create(
            draw=draw,
            case=case,
            policy="firearms",
            score=case.score,
            threshold=0.5,
            strategy=strategy,
            inclusion_probability=p,
            rank=rank,
            state="answered",
            answer=answer,
            answered_by=moderator,
            answered_at=now,
        )

    easy = label_from_labeling_item(answered(monitored, "no_violation", 1, "random", 0.01))
    assert fields(easy) == ("firearms", 0, "easy_negative", "labeling", True)
    assert (easy.sampling_strategy, easy.inclusion_probability) == ("random", 0.01)
    assert easy.label_id == f"lbl-l{easy.labeling_item_id}"
    (unsure_case,) = open_cases(0.45)
    assert label_from_labeling_item(answered(unsure_case, "unsure", 2)) is None
    positive_item = answered(flagged, "violation", 3)
    positive = label_from_labeling_item(positive_item)
    assert fields(positive) == ("firearms", 1, "positive", "labeling", True)
    assert (positive.score, positive.decision_id, positive.decided_at) == (0.6, None, now)
    assert label_from_labeling_item(positive_item) == positive  # idempotent
    assert Label.objects.count() == 2


@pytest.mark.django_db
def test_rebuild_derives_the_same_labels_once(moderator, qa_lead, settings):
    settings.QA_HUMAN_SAMPLE_RATE = 1.0
    (case,) = open_cases(0.6)
    decide(moderator, case)
    sample = qa_services.qa_claim_next(user=qa_lead)
    qa_services.qa_review_record(sample=sample, user=qa_lead, outcome="correct", spec=NOT_VIOLATING)
    open_cases(0.97)

    def snapshot():
        return sorted(
            (
                lbl.label_id,
                lbl.label,
                lbl.kind,
                lbl.source,
                lbl.for_training,
                lbl.is_current,
                lbl.qa_agreement,
                lbl.supersedes.label_id if lbl.supersedes else None,
            )
            for lbl in Label.objects.select_related("supersedes")
        )

    before = snapshot()
    assert len(before) == 3
    Label.objects.update(supersedes=None)
    Label.objects.all().delete()  # as before this code existed
    result = labels_rebuild()
    assert (result.decisions, result.labels_written) == (3, 3)
    assert snapshot() == before
    call_command("rebuild_labels", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert labels_rebuild().labels_written == 0
    assert snapshot() == before


@pytest.mark.django_db
def test_an_llm_verified_action_is_labelled_for_analysis_only_with_its_verdicts_model(
    llm,  # noqa: F811
    eager_celery,
    django_capture_on_commit_callbacks,
):
    llm.script(Reply.content(verdict(confidence=0.9)))
    case = run_case(django_capture_on_commit_callbacks, score=0.8, seller="seller-llm-label")
    decision = Decision.objects.get(case=case)
    assert decision.source == "llm_verified"
    label = Label.objects.get(decision=decision)
    assert (label.for_training, label.source, label.kind, label.label) == (
        False,
        "llm_verified",
        "positive",
        1,
    )
    shown = decision.llm_verdict
    assert (label.llm_model, label.prompt_version) == (shown.model, shown.prompt_version)
    assert label.llm_model == "fake-model"
    assert label.prompt_version
