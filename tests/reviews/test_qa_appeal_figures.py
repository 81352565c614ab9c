"""Appeal figures on the QA page, on PostgreSQL: appeal and overturn rates of the restricting
decisions made in the period, with Wilson intervals, per policy, decision source, detection
model, LLM model and prompt, and moderator; the page shows them to QA leads only."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from moderation_portal.core.leases import lease_take
from reviews.appeals.models import Appeal
from reviews.appeals.services import lease_spec
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec, decision_record
from reviews.enforcement.models import Enforcement
from reviews.policies.services import ladder_active
from reviews.qa.figures import appeal_figures
from tests.conftest import api_client_for
from tests.llm_verify.conftest import Reply
from tests.reviews.helpers import open_cases
from tests.reviews.test_appeals import body, post
from tests.reviews.test_llm_routing import run_case, verdict

LLM_KEY = "fake-model · prompt verify-v1"


def automatic(**kw) -> Decision:
    (case,) = open_cases(0.97, **kw)
    return Decision.objects.get(case=case)


def moderate(user, **spec) -> Decision:
    """The next queued case, claimed and decided by `user` through the API."""
    client = api_client_for(user)
    case = client.post("/api/v1/cases/claim-next/").json()
    response = client.post(f"/api/v1/cases/{case['id']}/decision/", spec, format="json")
    assert response.status_code == 201, response.json()
    return Decision.objects.get(pk=response.json()["id"])


ENFORCED_AS = {"remove": "remove_listing", "warn": "warn_seller"}


def appeal(marketplace_client, decision: Decision) -> int:
    """The seller appeals the decision's own action (the strike steps may have added a warning
    beside it)."""
    enforcement = Enforcement.objects.get(decision=decision, action=ENFORCED_AS[decision.action])
    response = post(marketplace_client, body(enforcement))
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def decide(staff, appeal_id: int, outcome: str) -> None:
    assert lease_take(lease_spec(), pk=appeal_id, user=staff)
    response = api_client_for(staff).post(
        f"/api/v1/appeals/{appeal_id}/decision/",
        {"outcome": outcome, "notes": "Looked at the listing again with the seller's account."},
        format="json",
    )
    assert response.status_code == 200, response.json()


def counts(row: dict) -> tuple:
    return row["decisions"], row["appealed"], row["decided"], row["overturned"]


def interval(row: dict, rate: str) -> tuple:
    return round(row[f"{rate}_ci_low"], 4), round(row[f"{rate}_ci_high"], 4)


@pytest.fixture
def appealed(
    llm,
    eager_celery,
    django_capture_on_commit_callbacks,
    marketplace_client,
    appeals_staff,
    moderator,
    moderator2,
):
    """Eight restricting decisions in the period, six appealed, five appeals decided, three
    overturned; beside them a decision that restricts nothing and one made 40 days ago."""
    auto_overturned = automatic(seller="seller-a1")
    auto_upheld = automatic(seller="seller-a2")
    automatic(seller="seller-a3")  # never appealed
    auto_new_model = automatic(seller="seller-b1", model_version="2027.1.0")  # appeal waiting
    llm.script(Reply.content(verdict(confidence=0.9)))
    llm_case = run_case(django_capture_on_commit_callbacks, score=0.8, seller="seller-l1")
    llm_verified = Decision.objects.get(case=llm_case)
    assert (llm_verified.source, llm_verified.action) == ("llm_verified", "remove")

    for n in range(4):
        open_cases(0.6, seller=f"seller-h{n}")
    ana_warned = moderate(moderator, verdict="violation", policy="firearms", action="warn")
    moderate(moderator, verdict="violation", policy="drugs", action="remove")  # never appealed
    ben_removed = moderate(moderator2, verdict="violation", policy="firearms", action="remove")
    moderate(moderator2, verdict="no_violation", action="none")  # restricts nothing
    (old_case,) = open_cases(0.6, seller="seller-old")
    decision_record(
        case=old_case,
        source="human",
        user=moderator,
        ladder=ladder_active(),
        now=timezone.now() - timedelta(days=40),
        spec=DecisionSpec(verdict="violation", policy="firearms", action="remove"),
    )

    outcomes = {
        auto_overturned: "overturn",
        auto_upheld: "uphold",
        llm_verified: "overturn",
        ana_warned: "overturn",
        ben_removed: "uphold",
    }
    for decision, outcome in outcomes.items():
        decide(appeals_staff, appeal(marketplace_client, decision), outcome)
    appeal(marketplace_client, auto_new_model)
    assert Appeal.objects.filter(state="decided").count() == 5
    assert Appeal.objects.filter(outcome="overturn").count() == 3


@pytest.mark.django_db
def test_appeal_and_overturn_rates_per_grouping(appealed, django_assert_num_queries):
    with django_assert_num_queries(6):  # overall and one per grouping, whatever the rows
        figures = appeal_figures(days=30)
    overall = figures["overall"]
    assert counts(overall) == (8, 6, 5, 3)
    assert (overall["appeal_rate"], overall["overturn_rate"]) == (0.75, 0.6)
    assert interval(overall, "appeal") == (0.4093, 0.9285)
    assert interval(overall, "overturn") == (0.2307, 0.8824)

    source = figures["groups"]["source"]
    assert {key: counts(row) for key, row in source.items()} == {
        "automatic (policy ladder)": (4, 3, 2, 1),
        "LLM-verified": (1, 1, 1, 1),
        "moderator": (3, 2, 2, 1),
    }
    automatic_row = source["automatic (policy ladder)"]
    assert (automatic_row["appeal_rate"], automatic_row["overturn_rate"]) == (0.75, 0.5)
    assert interval(automatic_row, "appeal") == (0.3006, 0.9544)
    assert interval(automatic_row, "overturn") == (0.0945, 0.9055)
    assert interval(source["moderator"], "appeal") == (0.2077, 0.9385)

    policy = figures["groups"]["policy"]
    assert {key: counts(row) for key, row in policy.items()} == {
        "drugs": (1, 0, 0, 0),
        "firearms": (7, 6, 5, 3),
    }
    assert policy["drugs"]["appeal_rate"] == 0.0
    assert interval(policy["drugs"], "appeal") == (0.0, 0.7935)
    assert policy["drugs"]["overturn_rate"] is None
    assert policy["drugs"]["overturn_ci_low"] is None

    detection = figures["groups"]["detection_model"]
    assert {key: counts(row) for key, row in detection.items()} == {
        "listing-guard 2026.11.1": (7, 5, 5, 3),
        "listing-guard 2027.1.0": (1, 1, 0, 0),
    }
    assert interval(detection["listing-guard 2026.11.1"], "appeal") == (0.3589, 0.9178)
    assert detection["listing-guard 2027.1.0"]["overturn_rate"] is None

    llm = figures["groups"]["llm"]
    assert {key: counts(row) for key, row in llm.items()} == {
        LLM_KEY: (1, 1, 1, 1),
        "no LLM verdict": (7, 5, 4, 2),
    }
    assert interval(llm[LLM_KEY], "overturn") == (0.2065, 1.0)

    moderators = figures["groups"]["moderator"]
    assert {key: counts(row) for key, row in moderators.items()} == {
        "mod-ana": (2, 1, 1, 1),
        "mod-ben": (1, 1, 1, 0),
    }
    assert moderators["mod-ben"]["overturn_rate"] == 0.0

    # a longer period takes in the decision made 40 days ago
    longer = appeal_figures(days=60)
    assert counts(longer["overall"]) == (9, 6, 5, 3)
    assert counts(longer["groups"]["moderator"]["mod-ana"]) == (3, 1, 1, 1)


def table_rows(html: str, grouping: str) -> dict[str, list[str]]:
    """The cells' text of each row of one appeal table, by group."""
    table = re.search(rf'<table [^>]*data-grouping="{grouping}">(.*?)</table>', html, re.S)
    assert table, grouping
    rows = re.findall(r'<tr data-group="([^"]*)">(.*?)</tr>', table.group(1), re.S)
    return {
        key: [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>.*?</td>", cells, re.S)
        ]
        for key, cells in rows
    }


@pytest.mark.django_db
def test_the_qa_page_shows_the_appeal_figures(appealed, qa_lead):
    client = Client()
    client.force_login(qa_lead)
    response = client.get("/qa/?days=30")
    assert response.status_code == 200
    html = response.content.decode()
    section = html[html.index('id="appeal-figures"') :]
    assert 'id="appeal-rate">0.750</b> (95% CI 0.409–0.929), 6 of 8' in section
    assert 'id="overturn-rate">0.600</b> (95% CI 0.231–0.882), 3 of 5' in section
    assert "A falling overturn rate is the sign that decisions are improving." in section
    assert table_rows(section, "source")["moderator"] == [
        "moderator",
        "3",
        "2",
        "0.667",
        "0.208–0.939",
        "2",
        "1",
        "0.500",
        "0.095–0.905",
    ]
    assert table_rows(section, "policy")["drugs"] == [
        "drugs",
        "1",
        "0",
        "0.000",
        "0.000–0.793",
        "no appeals in this period",
    ]
    assert table_rows(section, "detection_model")["listing-guard 2027.1.0"] == [
        "listing-guard 2027.1.0",
        "1",
        "1",
        "1.000",
        "0.207–1.000",
        "no appeal decided yet",
    ]
    assert table_rows(section, "llm")[LLM_KEY][:3] == [LLM_KEY, "1", "1"]
    assert table_rows(section, "moderator")["mod-ben"] == [
        "mod-ben",
        "1",
        "1",
        "1.000",
        "0.207–1.000",
        "1",
        "0",
        "0.000",
        "0.000–0.793",
    ]
    assert list(table_rows(section, "moderator")) == ["mod-ana", "mod-ben"]


@pytest.mark.django_db
def test_without_restricting_decisions_the_page_says_there_are_no_appeals(qa_lead):
    open_cases(0.6)  # queued for a person: no decision yet
    figures = appeal_figures(days=30)
    assert counts(figures["overall"]) == (0, 0, 0, 0)
    assert figures["overall"]["appeal_rate"] is None
    assert figures["groups"] == {
        "policy": {},
        "source": {},
        "detection_model": {},
        "llm": {},
        "moderator": {},
    }
    client = Client()
    client.force_login(qa_lead)
    html = client.get("/qa/").content.decode()
    section = html[html.index('id="appeal-figures"') :]
    assert "Appeal rate: no restricting decisions in this period" in section
    assert "Overturn rate: no appeals in this period" in section
    assert section.count("No appeals in this period: no restricting decisions") == 5


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "outsider", "moderator", "appeals_staff"])
def test_only_qa_leads_see_the_appeal_figures(who, request, marketplace_client):
    appeal_id = appeal(marketplace_client, automatic(seller="seller-private"))
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    before = list(Appeal.objects.values_list("id", "state", "claimed_by", "outcome"))
    response = client.get("/qa/?days=30")
    if who == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")
    else:
        assert response.status_code == 403
    assert b"appeal-figures" not in response.content
    assert list(Appeal.objects.values_list("id", "state", "claimed_by", "outcome")) == before
    assert before == [(appeal_id, "pending", None, "")]
