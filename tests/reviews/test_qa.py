import copy

import pytest
from django.test import Client

from reviews import qa, services
from reviews.defaults import default_ladder
from reviews.models import AuditEvent, Decision, Enforcement, QaReview, QaSample
from tests.conftest import api_client_for
from tests.llm_verify.conftest import Reply
from tests.reviews.helpers import open_cases
from tests.reviews.test_llm_routing import llm, run_case, verdict  # noqa: F401 - the fixture


def ladder_with_qa_rate(policy_admin, rate):
    ladder = copy.deepcopy(default_ladder())
    for row in ladder.values():
        row["qa_rate"] = rate
    services.ladder_draft_save(user=policy_admin, thresholds=ladder)
    services.ladder_publish(user=policy_admin)


def test_the_statistics():
    assert qa.wilson(0, 0) == (None, None)
    low, high = qa.wilson(45, 50)
    assert 0.78 < low < 0.79 and 0.95 < high < 0.97  # 0.9 observed, Wilson 95% interval
    perfect = {("violation", "violation"): 10, ("no_violation", "no_violation"): 10}
    assert qa.cohen_kappa(perfect) == 1.0
    chance = {("violation", "violation"): 25, ("violation", "no_violation"): 25,
              ("no_violation", "violation"): 25, ("no_violation", "no_violation"): 25}
    assert qa.cohen_kappa(chance) == 0.0
    assert round(qa.cohen_kappa({("violation", "violation"): 20, ("violation", "no_violation"): 5,
                                 ("no_violation", "violation"): 10, ("no_violation", "no_violation"): 15}), 4) == 0.4


@pytest.mark.django_db
def test_sampling_follows_the_rate_bands_and_disagreements(policy_admin, settings):
    ladder_with_qa_rate(policy_admin, 0.2)
    cases = open_cases(*([0.96] * 200 + [0.99] * 200))  # lower and upper half of the automatic band
    lower = QaSample.objects.filter(case__in=cases[:200]).count()
    upper = QaSample.objects.filter(case__in=cases[200:]).count()
    # 0.2 x 1.5 = 0.3 of the lower half, 0.2 x 0.5 = 0.1 of the upper half (deterministic draws)
    assert 40 <= lower <= 80 and 8 <= upper <= 35 and lower > upper
    sample = QaSample.objects.filter(case__in=cases[:200]).first()
    assert sample.reason == "automatic" and sample.band == "0.95-0.97" and round(sample.weight, 3) == round(1 / 0.3, 3)
    assert set(QaSample.objects.values_list("disagreement", flat=True)) == {False}


@pytest.mark.django_db
def test_llm_verified_decisions_are_sampled_and_reviewed(llm, eager_celery, django_capture_on_commit_callbacks,  # noqa: F811
                                                       policy_admin, qa_lead, moderator):
    ladder_with_qa_rate(policy_admin, 1.0)
    llm.script(Reply.content(verdict(confidence=0.9)))
    first = run_case(django_capture_on_commit_callbacks, score=0.8)
    second = run_case(django_capture_on_commit_callbacks, score=0.76)  # lower half of the band: sampled surely
    # a human decision too, sampled at the human rate (1.0 here)
    settings_human = open_cases(0.6)[0]
    client = api_client_for(moderator)
    client.post("/api/v1/cases/claim-next/")
    from django.conf import settings

    settings.QA_HUMAN_SAMPLE_RATE = 1.0
    client.post(f"/api/v1/cases/{settings_human.id}/decision/", {"verdict": "no_violation", "action": "none"}, format="json")
    samples = QaSample.objects.order_by("id")
    assert [s.reason for s in samples] == ["llm_verified", "llm_verified", "human"]

    page = Client()
    page.force_login(qa_lead)
    response = page.post("/qa/claim/")
    sample = QaSample.objects.get(claimed_by=qa_lead)
    assert response["Location"] == f"/qa/samples/{sample.id}/"
    body = page.get(response["Location"]).content.decode()
    assert 'id="qa-form"' in body and "LLM-verified" in body and 'id="verdict"' in body
    page.post(response["Location"], {"outcome": "agree"})
    assert QaReview.objects.get(sample=sample).outcome == "agree"

    # the next one is corrected: not a violation after all
    nxt = QaSample.objects.get(claimed_by=qa_lead, state="claimed")
    original = nxt.decision
    page.post(f"/qa/samples/{nxt.id}/", {"outcome": "correct", "verdict": "no_violation", "action": "none", "notes": "replica"})
    correction = Decision.objects.get(source="qa_correction")
    assert correction.supersedes == original and correction.verdict == "no_violation" and correction.decided_by == qa_lead
    reversal = Enforcement.objects.get(decision=correction)
    assert reversal.action == "reverse_remove" and reversal.reverses == Enforcement.objects.get(decision=original)
    assert AuditEvent.objects.filter(action="qa_reviewed", data__correction_id=correction.id).exists()

    figures = qa.qa_figures(days=7)
    assert figures["overall"]["n"] == 2 and figures["overall"]["agree"] == 1 and figures["overall"]["rate"] == 0.5
    assert figures["overall"]["matrix"] == [[1, 1], [0, 0]]
    model_key = "LLM fake-model · prompt verify-v1"
    assert figures["groups"]["model"][model_key]["n"] == 2
    assert figures["llm_band_cases"] == 2 and figures["llm_verified"] == 2 and figures["auto_verification_rate"] == 1.0
    assert figures["human_reviews_without_llm"] == 3 and round(figures["human_review_reduction"], 3) == round(2 / 3, 3)
    page_html = page.get("/qa/?days=7").content.decode()
    assert 'id="overall-agreement">0.500' in page_html and 'id="auto-rate">1.000' in page_html
    assert model_key in page_html
    assert {first.id, second.id} == set(Decision.objects.filter(source="llm_verified").values_list("case_id", flat=True))


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
    page.post(f"/qa/samples/{sample.id}/", {"outcome": "correct", "verdict": "no_violation", "action": "none", "notes": ""})
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
    before = (list(QaSample.objects.values_list("id", "state", "claimed_by")), QaReview.objects.count(), Decision.objects.count())
    for method, url in [("get", "/qa/"), ("post", "/qa/claim/"), ("get", f"/qa/samples/{sample.id}/"),
                        ("post", f"/qa/samples/{sample.id}/")]:
        response = getattr(client, method)(url, {"outcome": "agree"} if method == "post" else None)
        assert response.status_code in (302, 403), url
        if response.status_code == 302:
            assert response["Location"].startswith("/login/")
    assert (list(QaSample.objects.values_list("id", "state", "claimed_by")), QaReview.objects.count(),
            Decision.objects.count()) == before
