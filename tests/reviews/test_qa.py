import copy

import pytest
from django.test import Client

from moderation_portal.core.models import AuditEvent
from reviews.models import Decision, Enforcement, QaReview, QaSample
from reviews.policies import services as ladder_services
from reviews.policies.defaults import default_ladder
from reviews.qa import figures as qa
from reviews.qa import services as qa_services
from reviews.qa.sampling import draw, sample_probability
from tests.conftest import api_client_for
from tests.llm_verify.conftest import Reply
from tests.reviews.helpers import open_cases
from tests.reviews.test_llm_routing import run_case, verdict


def ladder_with_qa_rate(policy_admin, rate):
    ladder = copy.deepcopy(default_ladder())
    for row in ladder.values():
        row["qa_rate"] = rate
    ladder_services.ladder_draft_save(user=policy_admin, thresholds=ladder)
    ladder_services.ladder_publish(user=policy_admin)


def test_the_statistics():
    assert qa.wilson(0, 0) == (None, None)
    low, high = qa.wilson(45, 50)
    assert 0.78 < low < 0.79
    assert 0.95 < high < 0.97
    perfect = {("violation", "violation"): 10, ("no_violation", "no_violation"): 10}
    assert qa.cohen_kappa(perfect) == 1.0
    chance = {
        ("violation", "violation"): 25,
        ("violation", "no_violation"): 25,
        ("no_violation", "violation"): 25,
        ("no_violation", "no_violation"): 25,
    }
    assert qa.cohen_kappa(chance) == 0.0
    assert (
        round(
            qa.cohen_kappa(
                {
                    ("violation", "violation"): 20,
                    ("violation", "no_violation"): 5,
                    ("no_violation", "violation"): 10,
                    ("no_violation", "no_violation"): 15,
                }
            ),
            4,
        )
        == 0.4
    )


def expected_samples(decisions, p: float) -> set[int]:
    """The decisions the deterministic draw picks at probability `p`."""
    return {d.id for d in decisions if draw(d.id) < p}


@pytest.mark.django_db
def test_automatic_decisions_are_sampled_by_rate_and_band(policy_admin):
    ladder_with_qa_rate(policy_admin, 0.2)
    cases = open_cases(*([0.96] * 200 + [0.99] * 200))  # lower and upper half of the automatic band
    lower = list(Decision.objects.filter(case__in=cases[:200]))
    upper = list(Decision.objects.filter(case__in=cases[200:]))
    assert len(lower) == len(upper) == 200
    assert {d.source for d in lower + upper} == {"automatic"}
    # 0.2 x 1.5 = 0.3 of the lower half, 0.2 x 0.5 = 0.1 of the upper half
    for decisions, band, p in ((lower, "0.95-0.97", 0.3), (upper, "0.97-1.00", 0.1)):
        samples = QaSample.objects.filter(decision__in=decisions)
        assert {s.decision_id for s in samples} == expected_samples(decisions, p)
        assert 0 < samples.count() < len(decisions)
        for s in samples:
            assert (s.reason, s.band, s.disagreement, s.policy) == (
                "automatic",
                band,
                False,
                "firearms",
            )
            assert s.weight == pytest.approx(1 / p)
    assert QaSample.objects.count() == len(expected_samples(lower, 0.3)) + len(
        expected_samples(upper, 0.1)
    )


@pytest.mark.django_db
def test_disagreements_in_the_llm_band_are_sampled_more_by_the_disagreement_factor(
    llm,
    eager_celery,
    django_capture_on_commit_callbacks,
    policy_admin,
    moderator,
    qa_lead,
    settings,
):
    settings.QA_DISAGREEMENT_FACTOR = 4.0
    settings.QA_HUMAN_SAMPLE_RATE = 0.1
    ladder_with_qa_rate(policy_admin, 0.1)
    # LLM-verified although the LLM disagrees with the score: confidence 0.95 on 0.72 (0.23 apart);
    # 0.72 is in the lower half of the LLM band [0.70, 0.825)
    llm.script(Reply.content(verdict(confidence=0.95)))
    # one seller per listing: 64 strikes of one seller would propose suspending them
    disagreeing = [
        run_case(django_capture_on_commit_callbacks, score=0.72, seller=f"seller-d{n}")
        for n in range(24)
    ]
    # LLM-verified and agreeing: confidence 0.9 on 0.76 (0.14 apart)
    llm.script(Reply.content(verdict(confidence=0.9)))
    agreeing = [
        run_case(django_capture_on_commit_callbacks, score=0.76, seller=f"seller-a{n}")
        for n in range(24)
    ]
    # the LLM says no violation: a person decides, sampled at the human rate, and disagreeing too
    llm.script(Reply.content(verdict(decision="no_violation", action="none")))
    to_people = [
        run_case(django_capture_on_commit_callbacks, score=0.72, seller=f"seller-p{n}")
        for n in range(16)
    ]
    assert {c.state for c in disagreeing + agreeing} == {"closed"}
    assert {c.state for c in to_people} == {"queued"}
    client = api_client_for(moderator)
    for _ in to_people:
        claimed = client.post("/api/v1/cases/claim-next/").json()["id"]
        assert (
            client.post(
                f"/api/v1/cases/{claimed}/decision/",
                {"verdict": "no_violation", "action": "none"},
                format="json",
            ).status_code
            == 201
        )

    def decisions(cases):
        return list(
            Decision.objects.filter(case__in=cases).select_related(
                "case__llm_verdict", "case__ladder_version"
            )
        )

    groups = [
        # decisions, reason, band, p = base x band factor x disagreement factor, disagreement
        (decisions(disagreeing), "llm_verified", "0.70-0.82", 0.1 * 1.5 * 4.0, True),
        (decisions(agreeing), "llm_verified", "0.70-0.82", 0.1 * 1.5, False),
        (decisions(to_people), "human", "0.50-0.75", 0.1 * 1.5 * 4.0, True),
    ]
    expected_total = 0
    for group, reason, band, p, disagreement in groups:
        assert len(group) in (24, 16)
        assert {d.source for d in group} == {"human" if reason == "human" else "llm_verified"}
        for d in group:
            got_reason, got_band, got_p, got_disagreement = sample_probability(d, d.case)
            assert (got_reason, got_band, got_disagreement) == (reason, band, disagreement)
            assert got_p == pytest.approx(p)
        expected = expected_samples(group, p)
        samples = QaSample.objects.filter(decision__in=group)
        assert {s.decision_id for s in samples} == expected, reason
        for s in samples:
            assert (s.reason, s.band, s.disagreement) == (reason, band, disagreement)
            assert s.weight == pytest.approx(1 / p)
        expected_total += len(expected)
    assert QaSample.objects.count() == expected_total
    # the factor decides: some disagreements are sampled that the base rate alone would have
    # passed over
    disagreeing_decisions = groups[0][0] + groups[2][0]
    assert any(0.1 * 1.5 <= draw(d.id) < 0.1 * 1.5 * 4.0 for d in disagreeing_decisions)
    assert all(
        QaSample.objects.filter(decision=d).exists() == (draw(d.id) < 0.6)
        for d in disagreeing_decisions
    )
    # disagreements are checked first
    first = qa_services.qa_claim_next(user=qa_lead)
    assert first.disagreement is True


@pytest.mark.django_db
def test_llm_verified_decisions_are_sampled_and_reviewed(
    llm,
    eager_celery,
    django_capture_on_commit_callbacks,
    policy_admin,
    qa_lead,
    moderator,
    settings,
):
    ladder_with_qa_rate(policy_admin, 1.0)
    llm.script(Reply.content(verdict(confidence=0.9)))
    first = run_case(django_capture_on_commit_callbacks, score=0.8)
    second = run_case(
        django_capture_on_commit_callbacks, score=0.76
    )  # lower half of the band: sampled surely
    # a human decision too, sampled at the human rate (1.0 here)
    settings_human = open_cases(0.6)[0]
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    settings.QA_HUMAN_SAMPLE_RATE = 1.0  # pytest-django's fixture: restored after the test
    client.post(
        f"/api/v1/cases/{settings_human.id}/decision/",
        {"verdict": "no_violation", "action": "none"},
        format="json",
    )
    samples = QaSample.objects.order_by("id")
    assert [s.reason for s in samples] == ["llm_verified", "llm_verified", "human"]

    page = Client()
    page.force_login(qa_lead)
    response = page.post("/qa/claim/")
    sample = QaSample.objects.get(claimed_by=qa_lead)
    assert response["Location"] == f"/qa/samples/{sample.id}/"
    body = page.get(response["Location"]).content.decode()
    assert 'id="qa-form"' in body
    assert "LLM-verified" in body
    assert 'id="verdict"' in body
    page.post(response["Location"], {"outcome": "agree"})
    assert QaReview.objects.get(sample=sample).outcome == "agree"

    # the next one is corrected: not a violation after all
    nxt = QaSample.objects.get(claimed_by=qa_lead, state="claimed")
    original = nxt.decision
    page.post(
        f"/qa/samples/{nxt.id}/",
        {"outcome": "correct", "verdict": "no_violation", "action": "none", "notes": "replica"},
    )
    correction = Decision.objects.get(source="qa_correction")
    assert correction.supersedes == original
    assert correction.verdict == "no_violation"
    assert correction.decided_by == qa_lead
    reversal = Enforcement.objects.get(decision=correction)
    assert reversal.action == "restore_listing"
    assert reversal.reverses == Enforcement.objects.get(decision=original)
    assert AuditEvent.objects.filter(
        action="qa_reviewed", data__correction_id=correction.id
    ).exists()

    figures = qa.qa_figures(days=7)
    assert figures["overall"]["n"] == 2
    assert figures["overall"]["agree"] == 1
    assert figures["overall"]["rate"] == 0.5
    assert figures["overall"]["matrix"] == [[1, 1], [0, 0]]
    model_key = "LLM fake-model · prompt verify-v1"
    assert figures["groups"]["model"][model_key]["n"] == 2
    assert figures["llm_band_cases"] == 2
    assert figures["llm_verified"] == 2
    assert figures["auto_verification_rate"] == 1.0
    assert figures["human_reviews_without_llm"] == 3
    assert round(figures["human_review_reduction"], 3) == round(2 / 3, 3)
    page_html = page.get("/qa/?days=7").content.decode()
    assert 'id="overall-agreement">0.500' in page_html
    assert 'id="auto-rate">1.000' in page_html
    assert model_key in page_html
    assert {first.id, second.id} == set(
        Decision.objects.filter(source="llm_verified").values_list("case_id", flat=True)
    )


@pytest.mark.django_db
def test_qa_needs_the_claim_and_a_reason_to_correct(policy_admin, qa_lead):
    ladder_with_qa_rate(policy_admin, 1.0)
    open_cases(0.97)
    sample = QaSample.objects.get()
    page = Client()
    page.force_login(qa_lead)
    page.post(f"/qa/samples/{sample.id}/", {"outcome": "agree"})  # not claimed
    assert not QaReview.objects.exists()
    page.post("/qa/claim/")
    page.post(
        f"/qa/samples/{sample.id}/",
        {"outcome": "correct", "verdict": "no_violation", "action": "none", "notes": ""},
    )
    assert not QaReview.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "outsider", "moderator", "policy_admin"])
def test_only_qa_leads_use_the_qa_pages(who, request, policy_admin):
    ladder_with_qa_rate(policy_admin, 1.0)
    open_cases(0.97)
    sample = QaSample.objects.get()
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    before = (
        list(QaSample.objects.values_list("id", "state", "claimed_by")),
        QaReview.objects.count(),
        Decision.objects.count(),
    )
    for method, url in [
        ("get", "/qa/"),
        ("post", "/qa/claim/"),
        ("get", f"/qa/samples/{sample.id}/"),
        ("post", f"/qa/samples/{sample.id}/"),
    ]:
        response = getattr(client, method)(url, {"outcome": "agree"} if method == "post" else None)
        assert response.status_code in (302, 403), url
        if response.status_code == 302:
            assert response["Location"].startswith("/login/")
    assert (
        list(QaSample.objects.values_list("id", "state", "claimed_by")),
        QaReview.objects.count(),
        Decision.objects.count(),
    ) == before
