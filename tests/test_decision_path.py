"""Every decision, whatever its source, goes through the one decision path
(reviews.decisions.services.decision_record): one `decision_recorded` audit row each, its
enforcement rows (reversing what a superseded decision enforced), and the rules machines obey."""

import pytest

from moderation_portal.core.models import AuditEvent
from reviews.decisions.services import (
    DecisionRefused,
    DecisionSpec,
    NewDecision,
    decision_record,
    decisions_record,
)
from reviews.models import Case, Decision, Enforcement, OutboxMessage, QaReview, QaSample
from reviews.policies.services import ladder_active
from reviews.qa import services as qa_services
from tests.conftest import api_client_for
from tests.llm_verify.conftest import Reply
from tests.reviews.conftest import llm  # noqa: F401 - the fixture, for getfixturevalue
from tests.reviews.helpers import open_cases
from tests.reviews.test_llm_routing import run_case, verdict
from tests.reviews.test_qa import ladder_with_qa_rate


def assert_one_audit_row_per_decision():
    decisions = list(Decision.objects.all())
    assert decisions
    rows = list(AuditEvent.objects.filter(action="decision_recorded"))
    assert sorted(row.data["decision_id"] for row in rows) == sorted(d.id for d in decisions)
    by_decision = {row.data["decision_id"]: row for row in rows}
    for d in decisions:
        row = by_decision[d.id]
        assert (row.object_type, row.object_id, row.trace_id) == (
            "case",
            str(d.case_id),
            d.trace_id,
        )
        assert (
            row.data["source"],
            row.data["verdict"],
            row.data["action"],
            row.data["policy"],
        ) == (d.source, d.verdict, d.action, d.policy_id)
        assert row.data["supersedes"] == d.supersedes_id
        assert row.actor_id == d.decided_by_id


def automatic(**_):
    (case,) = open_cases(0.97)
    return Decision.objects.get(case=case)


def human(*, moderator, **_):
    (case,) = open_cases(0.6)
    client = api_client_for(moderator)
    assert client.post("/api/v1/cases/claim-next/").json()["id"] == case.id
    response = client.post(
        f"/api/v1/cases/{case.id}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "warn"},
        format="json",
    )
    assert response.status_code == 201
    return Decision.objects.get(id=response.json()["id"])


def llm_verified(*, request, **_):
    server = request.getfixturevalue("llm")
    request.getfixturevalue("eager_celery")
    server.script(Reply.content(verdict(confidence=0.9)))
    case = run_case(request.getfixturevalue("django_capture_on_commit_callbacks"), score=0.8)
    return Decision.objects.get(case=case)


def _qa_corrected(*, policy_admin, qa_lead, spec: DecisionSpec) -> Decision:
    ladder_with_qa_rate(policy_admin, 1.0)
    original = automatic()
    sample = qa_services.qa_claim_next(user=qa_lead)
    assert sample.decision == original
    qa_services.qa_review_record(
        sample=sample, user=qa_lead, outcome=QaReview.Outcome.CORRECT, spec=spec
    )
    return Decision.objects.get(source="qa_correction")


def qa_correction(*, policy_admin, qa_lead, **_):
    return _qa_corrected(
        policy_admin=policy_admin,
        qa_lead=qa_lead,
        spec=DecisionSpec(verdict="no_violation", policy=None, action="none", notes="a replica"),
    )


def appeal(*, appeals_staff, **_):
    original = automatic()
    return decision_record(
        case=original.case,
        source=Decision.Source.APPEAL,
        user=appeals_staff,
        supersedes=original,
        ladder=ladder_active(),
        spec=DecisionSpec(
            verdict="no_violation",
            policy=None,
            action="none",
            notes="appeal upheld: the seller showed it is a replica",
        ),
    )


SOURCES = {
    "automatic": automatic,
    "human": human,
    "llm_verified": llm_verified,
    "qa_correction": qa_correction,
    "appeal": appeal,
}


def test_every_source_is_covered():
    assert set(SOURCES) == set(Decision.Source.values)


@pytest.mark.django_db
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_decision_has_exactly_one_decision_recorded_audit_row(
    source, request, moderator, qa_lead, policy_admin, appeals_staff
):
    decision = SOURCES[source](
        request=request,
        moderator=moderator,
        qa_lead=qa_lead,
        policy_admin=policy_admin,
        appeals_staff=appeals_staff,
    )
    assert decision.source == source
    assert (
        AuditEvent.objects.filter(action="decision_recorded", data__decision_id=decision.id).count()
        == 1
    )
    assert_one_audit_row_per_decision()  # and every other decision the scenario made


def _tables():
    return (
        list(Decision.objects.values_list("id", flat=True)),
        list(Enforcement.objects.values_list("id", flat=True)),
        list(AuditEvent.objects.values_list("id", flat=True)),
        list(QaSample.objects.values_list("id", flat=True)),
        list(Case.objects.order_by("id").values_list("id", "state", "decided_at")),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["automatic", "llm_verified"])
def test_a_machine_never_suspends_an_account(source, policy_admin):
    ladder_with_qa_rate(policy_admin, 1.0)  # would sample it, were it written
    (case,) = open_cases(0.6)
    before = _tables()
    suspend = DecisionSpec(verdict="violation", policy="firearms", action="suspend")
    with pytest.raises(DecisionRefused):
        decision_record(case=case, source=source, ladder=ladder_active(), spec=suspend)
    assert _tables() == before
    # nor inside a batch: the whole batch is refused before anything is written
    remove = DecisionSpec(verdict="violation", policy="firearms", action="remove")
    (other,) = open_cases(0.62)
    before = _tables()
    with pytest.raises(DecisionRefused):
        decisions_record(
            new=[
                NewDecision(case=other, source=source, ladder=ladder_active(), spec=remove),
                NewDecision(case=case, source=source, ladder=ladder_active(), spec=suspend),
            ]
        )
    assert _tables() == before


@pytest.mark.django_db
def test_a_person_may_suspend_a_seller_whose_warning_was_delivered(moderator):
    (first,) = open_cases(0.97)  # the seller's first strike: removed and warned
    warning = OutboxMessage.objects.get(
        enforcement__decision__case=first, enforcement__action="warn_seller"
    )
    OutboxMessage.objects.filter(pk=warning.pk).update(state="delivered")  # the marketplace has it
    (case,) = open_cases(0.6)
    decision = decision_record(
        case=case,
        source=Decision.Source.APPEAL,
        user=moderator,
        ladder=ladder_active(),
        spec=DecisionSpec(verdict="violation", policy="firearms", action="suspend"),
    )
    assert list(Enforcement.objects.filter(decision=decision).values_list("action", flat=True)) == [
        "suspend_seller"
    ]
    assert_one_audit_row_per_decision()


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["human", "qa_correction", "appeal"])
def test_a_person_s_decision_needs_the_person(source):
    (case,) = open_cases(0.6)
    before = _tables()
    with pytest.raises(DecisionRefused):
        decision_record(
            case=case,
            source=source,
            ladder=ladder_active(),
            spec=DecisionSpec(verdict="no_violation", policy=None, action="none"),
        )
    assert _tables() == before


def _enforcements(decision: Decision) -> list[tuple]:
    return sorted(
        Enforcement.objects.filter(decision=decision).values_list(
            "action", "reverses_id", "listing_id"
        )
    )


@pytest.mark.django_db
def test_a_qa_correction_to_no_violation_restores_the_listing(policy_admin, qa_lead):
    correction = qa_correction(policy_admin=policy_admin, qa_lead=qa_lead)
    original = correction.supersedes
    removal, warning = Enforcement.objects.filter(decision=original).order_by("id")
    assert (removal.action, warning.action) == ("remove_listing", "warn_seller")  # first strike
    listing = original.case.listing_id
    assert _enforcements(correction) == [
        ("restore_listing", removal.id, listing),
        ("withdraw_warning", warning.id, listing),
    ]
    assert Enforcement.objects.count() == 4
    assert_one_audit_row_per_decision()


@pytest.mark.django_db
def test_a_qa_correction_from_remove_to_warn_restores_the_listing_and_warns(policy_admin, qa_lead):
    correction = _qa_corrected(
        policy_admin=policy_admin,
        qa_lead=qa_lead,
        spec=DecisionSpec(
            verdict="violation", policy="firearms", action="warn", notes="a first offence"
        ),
    )
    original = correction.supersedes
    removal, warning = Enforcement.objects.filter(decision=original).order_by("id")
    assert (removal.action, warning.action) == ("remove_listing", "warn_seller")  # first strike
    listing = original.case.listing_id
    # the seller's warning stands already: the correction only restores the listing
    assert _enforcements(correction) == [("restore_listing", removal.id, listing)]
    assert Enforcement.objects.count() == 3
    assert_one_audit_row_per_decision()


@pytest.mark.django_db
def test_an_appeal_over_a_correction_reverses_only_what_still_stands(
    policy_admin, qa_lead, appeals_staff
):
    correction = _qa_corrected(
        policy_admin=policy_admin,
        qa_lead=qa_lead,
        spec=DecisionSpec(
            verdict="violation", policy="firearms", action="warn", notes="a first offence"
        ),
    )
    # the warning the first strike sent stands behind the correction
    warning = Enforcement.objects.get(decision=correction.supersedes, action="warn_seller")
    upheld = decision_record(
        case=correction.case,
        source=Decision.Source.APPEAL,
        user=appeals_staff,
        supersedes=correction,
        ladder=ladder_active(),
        spec=DecisionSpec(verdict="no_violation", policy=None, action="none", notes="not a gun"),
    )
    # the removal was restored by the correction already; only the warning is withdrawn
    assert _enforcements(upheld) == [("withdraw_warning", warning.id, correction.case.listing_id)]
    assert_one_audit_row_per_decision()
