"""Champion and challenger on PostgreSQL: shadow scores in the event contract (schema version 1),
stored per case in the event's transaction, never routing anything; the comparison on `/models/`
and `GET /api/v1/models/compare/` against hand-counted cases; the what-if routing counted by the
ladder backtest's own function; QA leads and policy admins only."""

import copy
import json
import math
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from detection.intake.schema import MAX_CHALLENGERS
from detection.intake.validation import validate_event
from detection.models import DeadLetter, DetectionEvent, ShadowScore
from detection.policies import POLICY_CODES
from reviews.cases.claims import case_claim_next, case_decide
from reviews.cases.intake import detections_ingest
from reviews.decisions.services import DecisionSpec
from reviews.models import Case, QaSample
from reviews.policies import services as ladder_services
from reviews.policies.backtest import backtest, routing_tally
from reviews.policies.challengers import challenger_compare, challengers_seen, top_of
from reviews.policies.ladder import ROUTES
from reviews.qa import services as qa_services
from reviews.qa.figures import wilson
from reviews.qa.models import QaReview
from tests import factories as f
from tests.conftest import api_client_for
from tests.test_permissions import snapshot

CHAMPION = "2026.11.1"  # the factories' model_version
SHADOW = "2027.01.0-rc1"


def shadow(version: str = SHADOW, **scores) -> dict:
    return {"model_version": version, "scores": scores}


def challenged(score: float, *challengers: dict, policy: str = "firearms", **kw) -> dict:
    return f.event(score=score, policy=policy, challengers=list(challengers), **kw)


def ingest(*events) -> list[Case]:
    outcomes = detections_ingest(events=list(events), source="api")
    assert [o.status for o in outcomes] == ["accepted"] * len(events), outcomes
    return [Case.objects.get(detection_event__event_id=e["event_id"]) for e in events]


def reasons_of(event) -> set[tuple[str, str]]:
    valid, reasons = validate_event(event)
    assert valid is None, "expected the event to be refused"
    return {(r.field, r.code) for r in reasons}


# --- the contract ------------------------------------------------------------------------------


def test_challengers_are_optional_and_accepted_in_schema_version_1():
    assert validate_event(f.event())[1] == []
    event = challenged(0.8, shadow(firearms=0.9, scam=0.1), shadow("2027.02.0", drugs=0.3))
    valid, reasons = validate_event(event)
    assert reasons == []
    assert valid.challenger_scores == [
        (SHADOW, "firearms", 0.9),
        (SHADOW, "scam", 0.1),
        ("2027.02.0", "drugs", 0.3),
    ]
    assert event["schema_version"] == 1


AT = "detection.challengers"


@pytest.mark.parametrize(
    ("challengers", "expected"),
    [
        (
            [shadow(firearms=0.9), shadow(firearms=0.2)],
            (f"{AT}[1].model_version", "duplicate_challenger"),
        ),
        ([shadow(CHAMPION, firearms=0.9)], (f"{AT}[0].model_version", "challenger_is_champion")),
        (
            [shadow(f"v{i}", firearms=0.5) for i in range(MAX_CHALLENGERS + 1)],
            (AT, "too_many_items"),
        ),
        ([shadow(weapons=0.5)], ("detection.challengers[0].scores", "unknown_policy")),
        ([shadow(firearms=1.5)], ("detection.challengers[0].scores.firearms", "out_of_range")),
        ([shadow(firearms=-0.1)], ("detection.challengers[0].scores.firearms", "out_of_range")),
        ([shadow(firearms="high")], ("detection.challengers[0].scores.firearms", "wrong_type")),
        ([shadow()], ("detection.challengers[0].scores", "missing_field")),
        ([{"scores": {"firearms": 0.5}}], (f"{AT}[0].model_version", "missing_field")),
        ([{"model_version": SHADOW}], ("detection.challengers[0].scores", "missing_field")),
        ([shadow("", firearms=0.5)], ("detection.challengers[0].model_version", "too_short")),
        ([shadow("v" * 65, firearms=0.5)], ("detection.challengers[0].model_version", "too_long")),
        ([{**shadow(firearms=0.5), "weights": "x"}], ("detection.challengers[0]", "unknown_field")),
        ({"model_version": SHADOW}, ("detection.challengers", "wrong_type")),
    ],
)
def test_each_bad_challenger_gets_a_precise_reason(challengers, expected):
    assert expected in reasons_of(f.event(challengers=challengers))


def test_a_score_that_is_not_a_number_is_refused_by_name():
    text = json.dumps(challenged(0.8, shadow(firearms=0.25))).replace("0.25", "NaN")
    assert math.isnan(json.loads(text)["detection"]["challengers"][0]["scores"]["firearms"])
    assert reasons_of(text) == {("detection.challengers[0].scores.firearms", "not_a_number")}


# --- storage -----------------------------------------------------------------------------------


def _challenger_count(policy: str, version: str) -> float:
    value = REGISTRY.get_sample_value(
        "portal_challenger_score_count", {"policy": policy, "model_version": version}
    )
    return value or 0.0


@pytest.mark.django_db
def test_shadow_scores_are_stored_per_case_and_counted():
    before = _challenger_count("firearms", SHADOW), _challenger_count("drugs", "2027.02.0")
    event = challenged(0.6, shadow(firearms=0.91, scam=0.02), shadow("2027.02.0", drugs=0.4))
    plain, scored = ingest(f.event(score=0.6), copy.deepcopy(event))
    assert not ShadowScore.objects.filter(event=plain.detection_event).exists()
    stored = ShadowScore.objects.filter(event=scored.detection_event)
    assert sorted(stored.values_list("model_version", "policy", "score")) == [
        (SHADOW, "firearms", 0.91),
        (SHADOW, "scam", 0.02),
        ("2027.02.0", "drugs", 0.4),
    ]
    assert set(scored.detection_event.shadow_scores.all()) == set(stored)
    after = _challenger_count("firearms", SHADOW), _challenger_count("drugs", "2027.02.0")
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)
    # a redelivery is a duplicate: nothing stored or counted twice
    assert detections_ingest(events=[event], source="api")[0].status == "duplicate"
    assert stored.count() == 3
    assert _challenger_count("firearms", SHADOW) == after[0]


@pytest.mark.django_db
def test_hostile_challengers_are_dead_letters_and_the_rest_of_the_batch_is_stored(tier_client):
    good = challenged(0.7, shadow(firearms=0.4), listing="good-1")
    nan = json.dumps(challenged(0.7, shadow(firearms=0.123))).replace("0.123", "NaN")
    batch = [
        good,
        challenged(0.7, shadow("shadow\x00v1", firearms=0.4)),  # not storable text
        challenged(0.7, shadow(firearms=0.4), shadow(firearms=0.5)),
        challenged(0.7, shadow(CHAMPION, firearms=0.4)),
        challenged(0.7, shadow(**{"fire\x00arms": 0.4})),
        challenged(0.7, shadow("x" * 10_000, firearms=0.4)),
        f.event(listing="good-2"),
    ]
    outcomes = detections_ingest(events=[*batch, nan], source="api")
    statuses = [o.status for o in outcomes]
    assert statuses == ["accepted"] + ["rejected"] * 5 + ["accepted", "rejected"]
    codes = [{r["code"] for r in o.reasons} for o in outcomes]
    assert "unstorable_text" in codes[1]
    assert codes[2] == {"duplicate_challenger"}
    assert codes[3] == {"challenger_is_champion"}
    assert "unstorable_text" in codes[4]
    assert codes[5] == {"too_long"}
    assert codes[7] == {"not_a_number"}
    # events in = accepted + duplicates + dead letters, and only the good ones' scores are stored
    assert DetectionEvent.objects.count() == 2
    assert DeadLetter.objects.count() == 6
    assert list(ShadowScore.objects.values_list("event__event_id", "policy", "score")) == [
        (good["event_id"], "firearms", 0.4)
    ]
    # over REST the same: a duplicate challenger is a dead letter with its reason
    response = tier_client.post(
        "/api/v1/detections/",
        [challenged(0.7, shadow(firearms=0.4), shadow(firearms=0.5)), f.event()],
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    results = body["results"] if isinstance(body, dict) else body
    assert [r["status"] for r in results] == ["rejected", "accepted"]
    assert results[0]["reasons"][0]["code"] == "duplicate_challenger"
    assert ShadowScore.objects.count() == 1


# --- never routing -----------------------------------------------------------------------------

ROUTING_FIELDS = (
    "policy_id",
    "score",
    "route",
    "route_reason",
    "state",
    "queue_kind",
    "ladder_action",
    "llm_state",
    "suspension_review",
)


def _routing(case: Case) -> tuple:
    decisions = list(case.decisions.values_list("source", "verdict", "policy_id", "action"))
    return (*[getattr(case, name) for name in ROUTING_FIELDS], decisions)


@pytest.mark.django_db
@pytest.mark.parametrize("score", [0.35, 0.6, 0.8, 0.97])
def test_a_challenger_scoring_099_routes_nothing(score):
    plain = f.event(score=score)
    bold = copy.deepcopy(plain)
    bold.update(event_id=plain["event_id"] + "-b", trace_id=plain["trace_id"] + "-b")
    bold["listing"]["id"] += "-b"
    bold["detection"]["challengers"] = [
        shadow(firearms=0.99, drugs=0.99),
        shadow("2027.02.0", firearms=0.01 if score > 0.5 else 0.99),
    ]
    without, with_challengers = ingest(plain, bold)
    assert ShadowScore.objects.filter(event=with_challengers.detection_event).count() == 3
    assert _routing(with_challengers) == _routing(without)


# --- the comparison against hand-counted cases -------------------------------------------------


def _decide_all(moderator, specs: dict[int, DecisionSpec]) -> None:
    """Claim every queued case in turn and decide it as `specs` says."""
    while (case := case_claim_next(user=moderator)) is not None:
        case_decide(case=case, user=moderator, spec=specs[case.id])


VIOLATION = DecisionSpec(verdict="violation", policy="firearms", action="remove")
CLEARED = DecisionSpec(verdict="no_violation", policy=None, action="none")


@pytest.fixture
def hand_counted(settings, moderator, qa_lead, policy_admin):
    """Firearms flags under the default thresholds (action 0.95, review 0.50) with qa_rate 1.0:

    case  champion  challenger            people
    A     0.60      0.97                  violation
    B     0.65      0.40                  no violation
    C     0.55      0.96                  violation
    D     0.80      0.30                  no violation (LLM band, no LLM: a person decides)
    E     0.96      0.60                  automatic removal a QA lead agreed with
    F     0.97      0.99                  automatic removal a QA lead corrected to no violation
    G     0.52      0.20 (drugs 0.55)     a violation of drugs, not firearms
    I     0.35      0.70                  nobody (monitor): what-if only
    J     0.60      none                  violation; no challenger, so not compared
    """
    settings.QA_HUMAN_SAMPLE_RATE = 0.0
    active = ladder_services.ladder_active()
    thresholds = {code: {**row, "qa_rate": 1.0} for code, row in active.thresholds.items()}
    ladder_services.ladder_draft_save(user=policy_admin, thresholds=thresholds)
    ladder_services.ladder_publish(user=policy_admin)
    cases = dict(
        zip(
            "ABCDEFGIJ",
            ingest(
                challenged(0.60, shadow(firearms=0.97)),
                challenged(0.65, shadow(firearms=0.40)),
                challenged(0.55, shadow(firearms=0.96)),
                challenged(0.80, shadow(firearms=0.30)),
                challenged(0.96, shadow(firearms=0.60)),
                challenged(0.97, shadow(firearms=0.99)),
                challenged(0.52, shadow(firearms=0.20, drugs=0.55)),
                challenged(0.35, shadow(firearms=0.70)),
                f.event(score=0.60),
            ),
            strict=True,
        )
    )
    drugs = DecisionSpec(verdict="violation", policy="drugs", action="remove")
    _decide_all(
        moderator,
        {
            cases["A"].id: VIOLATION,
            cases["B"].id: CLEARED,
            cases["C"].id: VIOLATION,
            cases["D"].id: CLEARED,
            cases["G"].id: drugs,
            cases["J"].id: VIOLATION,
        },
    )
    for _ in range(2):
        sample = qa_services.qa_claim_next(user=qa_lead)
        outcome = "agree" if sample.case_id == cases["E"].id else "correct"
        assert sample.case_id == cases["E" if outcome == "agree" else "F"].id
        qa_services.qa_review_record(
            sample=sample,
            user=qa_lead,
            outcome=outcome,
            spec=None if outcome == "agree" else CLEARED,
        )
    assert QaSample.objects.count() == 2
    assert QaReview.objects.filter(outcome="agree").count() == 1
    assert Case.objects.get(pk=cases["I"].pk).decisions.count() == 0
    return cases


def _share(p: dict) -> tuple:
    return p["count"], p["n"]


def _compare() -> dict:
    return challenger_compare(
        challenger=SHADOW, thresholds=ladder_services.ladder_active().thresholds, days=30
    )


@pytest.mark.django_db
def test_precision_recall_and_agreement_match_the_hand_count(hand_counted):
    result = _compare()
    assert (result["cases"], result["decided_cases"], result["truncated"]) == (8, 7, False)
    assert result["champion_versions"] == {CHAMPION: 8}
    firearms = next(p for p in result["policies"] if p["policy"] == "firearms")
    assert firearms["thresholds"] == {"action": 0.95, "review": 0.5}
    assert (firearms["judged"], firearms["violations"]) == (7, 3)  # A, C, E; not B D F G
    champion, challenger = firearms["champion"], firearms["challenger"]
    # champion: at 0.95 flags E (yes) and F (no); at 0.50 flags all seven
    assert _share(champion["action"]["precision"]) == (1, 2)
    assert _share(champion["action"]["recall"]) == (1, 3)
    assert _share(champion["review"]["precision"]) == (3, 7)
    assert _share(champion["review"]["recall"]) == (3, 3)
    assert _share(champion["agreement"]) == (3, 7)
    assert champion["kappa"] == pytest.approx(0.0)
    # challenger: at 0.95 flags A, C (yes) and F (no); at 0.50 also E; clears B, D and G
    assert _share(challenger["action"]["precision"]) == (2, 3)
    assert _share(challenger["action"]["recall"]) == (2, 3)
    assert _share(challenger["review"]["precision"]) == (3, 4)
    assert _share(challenger["review"]["recall"]) == (3, 3)
    assert _share(challenger["agreement"]) == (6, 7)
    assert challenger["kappa"] == pytest.approx(18 / 25)
    # every proportion carries its Wilson interval
    p = challenger["agreement"]
    assert (p["rate"], p["ci_low"], p["ci_high"]) == (6 / 7, *wilson(6, 7))
    assert 0 < p["ci_low"] < 6 / 7 < p["ci_high"] < 1
    # G is judged for drugs too: the champion sent no drugs score (0), the challenger 0.55
    drugs = next(p for p in result["policies"] if p["policy"] == "drugs")
    assert (drugs["judged"], drugs["violations"]) == (1, 1)
    assert _share(drugs["champion"]["review"]["recall"]) == (0, 1)
    assert drugs["champion"]["review"]["precision"]["rate"] is None
    assert _share(drugs["challenger"]["review"]["recall"]) == (1, 1)
    assert _share(drugs["challenger"]["action"]["recall"]) == (0, 1)
    # all policies pooled
    assert (result["overall"]["judged"], result["overall"]["violations"]) == (8, 4)
    assert _share(result["overall"]["challenger"]["agreement"]) == (7, 8)
    assert _share(result["overall"]["champion"]["agreement"]) == (3, 8)


@pytest.mark.django_db
def test_what_if_routing_is_the_backtest_function_on_the_same_rows(hand_counted):
    result = _compare()
    routes = {p["policy"]: p for p in result["policies"]}
    counts = {
        model: {
            code: {r: row[model]["routes"][r]["count"] for r in result["routes"]}
            for code, row in routes.items()
            if row[model]["routed"]
        }
        for model in ("champion", "challenger")
    }
    # by hand: champion A B C G human review, D LLM band, E F automatic, I monitor
    assert counts["champion"] == {
        "firearms": {
            "auto_action": 2,
            "llm_verify": 1,
            "human_review": 4,
            "monitor": 1,
            "allow": 0,
        }
    }
    # challenger: A C F automatic, I LLM band, E human review, B D monitor; G flags drugs
    assert counts["challenger"] == {
        "firearms": {
            "auto_action": 3,
            "llm_verify": 1,
            "human_review": 1,
            "monitor": 2,
            "allow": 0,
        },
        "drugs": {"auto_action": 0, "llm_verify": 0, "human_review": 1, "monitor": 0, "allow": 0},
    }
    assert _share(routes["firearms"]["challenger"]["routes"]["auto_action"]) == (3, 7)
    assert _share(result["overall"]["challenger"]["routes"]["monitor"]) == (2, 8)
    # the same rows through the backtest's function give the same counts and moves
    thresholds = ladder_services.ladder_active().thresholds
    rows = []
    for case in Case.objects.filter(detection_event__shadow_scores__isnull=False).distinct():
        scores = dict(case.detection_event.shadow_scores.values_list("policy", "score"))
        rows.append(((case.policy_id, case.score), top_of(scores)))
    tally = routing_tally(rows, before=thresholds, after=thresholds)
    assert tally.total == result["cases"] == 8
    for code, row in routes.items():
        for r in ROUTES:
            seen = tally.per_policy.get(code, {})
            assert row["champion"]["routes"][r]["count"] == seen.get(("before", r), 0)
            assert row["challenger"]["routes"][r]["count"] == seen.get(("after", r), 0)
    assert result["moves"] == [[tally.moves[(b, a)] for a in ROUTES] for b in ROUTES]
    # and the champion's side is what the ladder backtest says of the same cases (J aside)
    Case.objects.filter(pk=hand_counted["J"].pk).update(created_at="2000-01-01T00:00:00Z")
    ladder = backtest(draft=thresholds, active=thresholds, days=30)
    assert ladder["cases"] == 8
    assert ladder["per_policy"]["firearms"]["before"] == counts["champion"]["firearms"]


# --- the API and the page ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_compare_api(hand_counted, qa_lead, policy_admin):
    for user in (qa_lead, policy_admin):
        response = api_client_for(user).get(f"/api/v1/models/compare/?challenger={SHADOW}")
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["challenger"] == SHADOW
        assert body["ladder_version"] == ladder_services.ladder_active().version
        assert [p["policy"] for p in body["policies"]] == list(POLICY_CODES)
        assert body["routes"] == [str(r) for r in ROUTES]
        firearms = body["policies"][list(POLICY_CODES).index("firearms")]
        assert set(firearms) == {
            "policy",
            "thresholds",
            "judged",
            "violations",
            "champion",
            "challenger",
        }
        assert set(firearms["challenger"]) == {
            "action",
            "review",
            "agreement",
            "kappa",
            "routed",
            "routes",
        }
        assert set(firearms["challenger"]["action"]["precision"]) == {
            "count",
            "n",
            "rate",
            "ci_low",
            "ci_high",
        }
        assert firearms["challenger"]["agreement"]["count"] == 6
    client = api_client_for(qa_lead)
    missing = client.get("/api/v1/models/compare/")
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_parameter"
    unknown = client.get("/api/v1/models/compare/?challenger=2099.1")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_challenger"
    assert unknown.json()["error"]["details"] == {"challengers": [SHADOW], "days": 30}
    bad_days = client.get(f"/api/v1/models/compare/?challenger={SHADOW}&days=0")
    assert (bad_days.status_code, bad_days.json()["error"]["code"]) == (400, "invalid")
    one_day = client.get(f"/api/v1/models/compare/?challenger={SHADOW}&days=1").json()
    assert (one_day["days"], one_day["cases"]) == (1, 8)


@pytest.mark.django_db
def test_the_compare_is_bounded_and_says_when_it_is_truncated(monkeypatch, hand_counted):
    from reviews.policies import challengers

    monkeypatch.setattr(challengers, "MAX_CASES", 3)
    result = _compare()
    assert (result["cases"], result["truncated"], result["max_cases"]) == (3, True, 3)
    # the newest three: I, G and F
    assert result["decided_cases"] == 2


@pytest.mark.django_db
def test_the_models_page_lists_challengers_and_compares(hand_counted, qa_lead):
    ingest(challenged(0.6, shadow("2027.02.0", firearms=0.5)))
    client = Client()
    client.force_login(qa_lead)
    page = client.get("/models/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-challenger="{SHADOW}"' in html
    assert 'data-challenger="2027.02.0"' in html
    # the most recently seen challenger is compared by default
    assert 'id="comparison" data-challenger="2027.02.0"' in html
    html = client.get(f"/models/?challenger={SHADOW}").content.decode()
    assert f'id="comparison" data-challenger="{SHADOW}"' in html
    assert "8 cases of the last 30 days scored by both; 7 decided by people." in html
    assert html.count('class="card policy-comparison"') == len(POLICY_CODES) + 1
    assert "<b>0.857</b>" in html  # the challenger's firearms agreement, 6/7
    assert client.get("/models/?challenger=2099.1").status_code == 404


@pytest.mark.django_db
def test_a_challenger_seen_only_before_the_window_is_not_listed(qa_lead):
    old, recent = "2026.09.0", SHADOW
    old_case, recent_case = ingest(
        challenged(0.7, shadow(old, firearms=0.8)),
        challenged(0.6, shadow(recent, firearms=0.9, drugs=0.1)),
    )
    long_ago = timezone.now() - timedelta(days=40)
    DetectionEvent.objects.filter(pk=old_case.detection_event_id).update(emitted_at=long_ago)

    seen = challengers_seen(days=30)
    assert [(r["model_version"], r["cases"]) for r in seen] == [(recent, 1)]  # one case, 2 scores
    wider = challengers_seen(days=60)
    assert [r["model_version"] for r in wider] == [recent, old]  # the newest first
    assert (wider[1]["cases"], wider[1]["first_seen"], wider[1]["last_seen"]) == (
        1,
        long_ago,
        long_ago,
    )
    # the comparison covers the same window as the list
    thresholds = ladder_services.ladder_active().thresholds
    assert challenger_compare(challenger=old, thresholds=thresholds, days=30)["cases"] == 0
    assert challenger_compare(challenger=old, thresholds=thresholds, days=60)["cases"] == 1

    client = Client()
    client.force_login(qa_lead)
    html = client.get("/models/").content.decode()
    assert f'data-challenger="{old}"' not in html
    assert f'id="comparison" data-challenger="{recent}"' in html
    assert "A challenger seen only before it is not listed: widen the window with" in html
    assert f'data-challenger="{old}"' in client.get("/models/?days=60").content.decode()

    # asked for by name, it is not an unknown challenger: the page says how to widen the window
    response = client.get(f"/models/?challenger={old}")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="comparison"' not in html
    assert f"<code>{old}</code> scored no case in the last 30 days, only before." in html
    assert f'href="?challenger={old}&amp;days=365"' in html
    assert 'id="days"' in html  # the window's form, with no comparison to carry it
    html = client.get(f"/models/?challenger={old}&days=60").content.decode()
    assert "1 case of the last 60 days scored by both; 0 decided by people." in html

    # nothing in the window at all, but challengers before it
    DetectionEvent.objects.filter(pk=recent_case.detection_event_id).update(emitted_at=long_ago)
    html = client.get("/models/").content.decode()
    assert 'id="comparison"' not in html
    assert re.search(
        r'id="challengers-empty">No challenger scored a case in the last 30 days; some scored '
        r"cases before\. Widen the window",
        html,
    )
    ShadowScore.objects.all().delete()
    html = client.get("/models/").content.decode()
    assert 'id="challengers-empty">No challenger has scored a case yet.' in html


@pytest.mark.django_db
def test_outsiders_are_refused_and_nothing_changes(
    hand_counted, moderator, appeals_staff, outsider
):
    before = snapshot()
    for user in (moderator, appeals_staff, outsider):
        client = Client()
        client.force_login(user)
        assert client.get("/models/").status_code == 403
        api = api_client_for(user).get(f"/api/v1/models/compare/?challenger={SHADOW}")
        assert api.status_code == 403
        assert api.json()["error"]["code"] == "permission_denied"
    assert Client().get("/models/").status_code == 302
    assert Client().get(f"/api/v1/models/compare/?challenger={SHADOW}").status_code in (401, 403)
    assert snapshot() == before


# --- the case page -----------------------------------------------------------------------------


def _page_queries(client, case_id: int) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(f"/cases/{case_id}/")
    assert response.status_code == 200
    return len(ctx.captured_queries), response.content.decode()


@pytest.mark.django_db
def test_the_case_page_shows_challengers_beside_the_champion(moderator):
    plain, scored = ingest(
        f.event(score=0.6),
        challenged(
            0.6,
            shadow(firearms=0.912, drugs=0.333),
            shadow("2027.02.0", firearms=0.444),
            shadow("2027.03.0<b>", scam=0.5),
        ),
    )
    client = Client()
    client.force_login(moderator)
    client.get(f"/cases/{plain.id}/")  # warm the session and roles
    few, plain_page = _page_queries(client, plain.id)
    many, page = _page_queries(client, scored.id)
    assert few == many, f"{few} queries without challengers, {many} with three"
    assert "shadow " not in plain_page
    assert f'<th class="challenger">shadow {SHADOW}</th>' in page
    assert '<th class="challenger">shadow 2027.03.0&lt;b&gt;</th>' in page  # escaped
    firearms = re.search(r"<tr><td>firearms</td>(.*?)</tr>", page).group(1)
    drugs = re.search(r"<tr><td>drugs</td>(.*?)</tr>", page).group(1)
    shown = re.compile(r'<td class="num challenger">(.*?)</td>')
    assert shown.findall(firearms) == ["0.912", "0.444", "–"]
    assert shown.findall(drugs) == ["0.333", "–", "–"]
    assert re.search(r'<td class="num">0.600</td>', firearms)
    assert "they never route a case" in page


# --- the simulator -----------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def test_the_simulator_sends_a_challenger_better_on_one_policy_and_worse_on_another():
    from detection.intake.simulator import (
        CHALLENGER_VERSION,
        HARD_NEGATIVES,
        DetectionTierSimulator,
    )

    shadowed = DetectionTierSimulator(seed=7, challengers=True)
    with_shadow = [shadowed.event() for _ in range(300)]
    plain = DetectionTierSimulator(seed=7)
    # the champion's side is the same stream with or without the shadow model
    for event in with_shadow[:40]:
        same = plain.event()
        assert "challengers" not in same["detection"]
        assert (same["event_id"], same["detection"]["scores"]) == (
            event["event_id"],
            event["detection"]["scores"],
        )
    for event in with_shadow[:10]:
        assert validate_event(event)[1] == []
    look_alikes = {title for _, title, _, _ in HARD_NEGATIVES}
    gain: dict[str, list[float]] = {}  # policy → challenger minus champion, logit, towards truth
    for event in with_shadow:
        detection = event["detection"]
        (challenger,) = detection["challengers"]
        assert challenger["model_version"] == CHALLENGER_VERSION
        assert set(challenger["scores"]) == set(detection["scores"])
        policy, _ = top_of(detection["scores"])
        violating = not detection.get("sample") and event["listing"]["title"] not in look_alikes
        towards = 1 if violating else -1
        shift = _logit(challenger["scores"][policy]) - _logit(detection["scores"][policy])
        gain.setdefault(policy, []).append(towards * shift)
    mean = {code: sum(v) / len(v) for code, v in gain.items()}
    assert mean["counterfeit"] > 0.8  # sharper
    assert mean["stolen_goods"] < -0.6  # blunter
    assert abs(mean["firearms"]) < 0.3  # about the same


@pytest.mark.django_db
def test_the_simulate_command_sends_challengers_through_the_celery_path(eager_celery, qa_lead):
    from django.core.management import call_command

    from detection.intake.simulator import CHALLENGER_VERSION

    call_command("simulate_detection_tier", "--count", "20", "--seed", "5", "--challengers")
    events = list(DetectionEvent.objects.prefetch_related("shadow_scores"))
    assert len(events) >= 15
    for event in events:
        stored = {
            s.policy for s in event.shadow_scores.all() if s.model_version == CHALLENGER_VERSION
        }
        assert stored == set(event.scores), event.event_id
    body = api_client_for(qa_lead).get(f"/api/v1/models/compare/?challenger={CHALLENGER_VERSION}")
    assert body.status_code == 200
    assert body.json()["cases"] == len(events)
