import copy

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from moderation_portal.core.models import AuditEvent
from reviews.models import Case, LadderVersion, Policy
from reviews.policies import ladder as rules
from reviews.policies import services as ladder_services
from reviews.policies.defaults import default_ladder
from tests.reviews.helpers import open_cases


def test_defaults_follow_the_seeds():
    t = default_ladder()["firearms"]
    assert [
        rules.route(s, t).route for s in (0.1, 0.29, 0.3, 0.49, 0.5, 0.69, 0.7, 0.94, 0.95, 0.99)
    ] == [
        "allow",
        "allow",
        "monitor",
        "monitor",
        "human_review",
        "human_review",
        "llm_verify",
        "llm_verify",
        "auto_action",
        "auto_action",
    ]
    assert rules.route(0.96, t).action == "remove"
    assert not rules.route(0.96, t).suspension_review
    assert rules.route(0.995, t).suspension_review


def test_an_automatic_warning_tier():
    t = {**default_ladder()["scam"], "warn": 0.85}
    assert (rules.route(0.9, t).route, rules.route(0.9, t).action) == ("auto_action", "warn")
    assert rules.route(0.8, t).route == "llm_verify"


@pytest.mark.parametrize(
    ("mutation", "problem"),
    [
        ({"review": 0.2}, "must be ordered"),
        ({"remove": 1.5}, "outside [0, 1]"),
        ({"monitor": "low"}, "must be a number"),
        ({"severity": 9}, "whole number from 1 to 5"),
        ({"sla_hours": 0}, "whole number from 1 to 720"),
        ({"suspend": 0.9}, "must be ordered"),
        ({"surprise": 1}, "unknown fields"),
    ],
)
def test_validation_names_the_problem(mutation, problem):
    ladder = default_ladder()
    ladder["drugs"].update(mutation)
    with pytest.raises(rules.LadderError) as err:
        rules.validate(ladder)
    assert any(problem in p and p.startswith("drugs") for p in err.value.problems), (
        err.value.problems
    )


def test_validation_needs_every_policy_and_no_others():
    ladder = default_ladder()
    del ladder["scam"]
    ladder["weapons"] = ladder["firearms"]
    with pytest.raises(rules.LadderError) as err:
        rules.validate(ladder)
    assert "unknown policy codes: weapons" in err.value.problems
    assert "scam: missing" in err.value.problems


def test_yaml_round_trip_and_unsafe_yaml():
    ladder = rules.validate(default_ladder())
    text = rules.to_yaml(thresholds=ladder, version=3, notes="quarterly review")
    assert text.startswith("# Policy ladder")
    assert "kind: moderation-portal/policy-ladder" in text
    assert rules.from_yaml(text) == (ladder, "quarterly review")
    with pytest.raises(rules.LadderError, match="not valid YAML"):
        rules.from_yaml("kind: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(rules.LadderError, match="not a policy ladder file"):
        rules.from_yaml("- 1\n- 2\n")
    with pytest.raises(rules.LadderError, match="over"):
        rules.from_yaml("#" * (rules.MAX_YAML_BYTES + 1))


def test_diff_lists_field_changes():
    old = default_ladder()
    new = copy.deepcopy(old)
    new["drugs"]["review"] = 0.55
    assert rules.diff(old, new) == [{"policy": "drugs", "field": "review", "from": 0.5, "to": 0.55}]


@pytest.mark.django_db
def test_publish_makes_an_immutable_version_that_routing_and_decisions_record(
    policy_admin, moderator
):
    (before,) = open_cases(0.8)
    assert before.ladder_version.version == 1
    assert before.route == "llm_verify"
    draft = copy.deepcopy(ladder_services.ladder_active().thresholds)
    draft["firearms"]["llm_verify"] = 0.85
    draft["firearms"]["sla_hours"] = 2
    ladder_services.ladder_draft_save(
        user=policy_admin, thresholds=rules.validate(draft), notes="tighten the LLM band"
    )
    v2 = ladder_services.ladder_publish(user=policy_admin)
    assert (v2.version, v2.state, v2.is_active) == (2, "published", True)
    assert LadderVersion.objects.filter(is_active=True).count() == 1
    assert Policy.objects.get(code="firearms").sla_hours == 2
    (after,) = open_cases(0.8)
    assert after.ladder_version == v2
    assert after.route == "human_review"
    assert not LadderVersion.objects.filter(state="draft").exists()
    audit = AuditEvent.objects.get(action="ladder_published")
    assert audit.actor == policy_admin
    assert audit.data["changes"][0]["field"] == "llm_verify"
    # the decision records the version in force when it was made
    from tests.conftest import api_client_for

    client = api_client_for(moderator)
    case_id = client.post("/api/v1/cases/claim-next/").json()["id"]
    decided = client.post(
        f"/api/v1/cases/{case_id}/decision/",
        {"verdict": "no_violation", "action": "none"},
        format="json",
    )
    assert decided.json()["ladder_version"] == 2
    # rollback
    ladder_services.ladder_activate(user=policy_admin, version=LadderVersion.objects.get(version=1))
    assert ladder_services.ladder_active().version == 1
    assert AuditEvent.objects.filter(action="ladder_activated", data__version=1).exists()


@pytest.mark.django_db
def test_backtest_compares_the_draft_with_the_active_version():
    from reviews.policies.backtest import backtest

    open_cases(0.55, 0.6, 0.75, 0.8, 0.96)
    active = ladder_services.ladder_active().thresholds
    draft = copy.deepcopy(active)
    draft["firearms"]["review"] = 0.58  # 0.55 moves from review to monitor
    draft["firearms"]["remove"] = draft["firearms"]["warn"] = (
        0.78  # 0.8 moves from LLM band to automatic
    )
    result = backtest(draft=draft, active=active, days=7)
    assert result["cases"] == 5
    assert result["changed"] == 2
    routes = result["routes"]
    matrix = {
        (b, a): result["matrix"][i][j] for i, b in enumerate(routes) for j, a in enumerate(routes)
    }
    assert matrix[("human_review", "monitor")] == 1
    assert matrix[("llm_verify", "auto_action")] == 1
    assert matrix[("auto_action", "auto_action")] == 1
    assert (result["human_review_before"], result["human_review_after"]) == (4, 2)


def _admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form_from(thresholds: dict) -> dict:
    return {
        f"{code}.{key}": str(value)
        for code, row in thresholds.items()
        for key, value in row.items()
    }


@pytest.mark.django_db
def test_the_ladder_pages_for_a_policy_admin(policy_admin):
    client = _admin_client(policy_admin)
    assert b"Start a draft" in client.get("/ladder/").content
    client.post("/ladder/draft/start/")
    form = _form_from(ladder_services.ladder_active().thresholds)
    form["drugs.review"] = "0.2"  # below monitor: refused
    client.post("/ladder/draft/", form)
    page = client.get("/ladder/").content.decode()
    assert "drugs: thresholds must be ordered" in page
    assert LadderVersion.objects.get(state="draft").thresholds["drugs"]["review"] == 0.5
    form["drugs.review"] = "0.55"
    client.post("/ladder/draft/", {**form, "notes": "drugs: fewer reviews"})
    page = client.get("/ladder/").content.decode()
    assert "<code>drugs.review</code>: 0.5 → 0.55" in page
    assert 'id="backtest-summary"' in page
    exported = client.get("/ladder/draft/export.yaml")
    assert exported["Content-Type"].startswith("application/yaml")
    assert b"review: 0.55" in exported.content
    response = client.post("/ladder/publish/")
    assert response.status_code == 302
    assert ladder_services.ladder_active().version == 2
    version_page = client.get("/ladder/versions/2/").content.decode()
    assert "<code>drugs.review</code>: 0.5 → 0.55" in version_page
    # import a file as the new draft
    text = rules.to_yaml(
        thresholds=ladder_services.ladder_active().thresholds, version=2, notes="imported"
    )
    text = text.replace("review: 0.55", "review: 0.6")
    client.post("/ladder/import/", {"file": SimpleUploadedFile("ladder.yaml", text.encode())})
    assert LadderVersion.objects.get(state="draft").thresholds["drugs"]["review"] == 0.6
    client.post("/ladder/import/", {"file": SimpleUploadedFile("bad.yaml", b"kind: nope\n")})
    assert "not a policy ladder file" in client.get("/ladder/").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "outsider", "moderator", "qa_lead"])
def test_only_policy_admins_change_the_ladder(who, request, policy_admin):
    ladder_services.ladder_draft_save(
        user=policy_admin, thresholds=ladder_services.ladder_active().thresholds
    )
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    before = (
        list(
            LadderVersion.objects.values_list("id", "state", "version", "is_active", "thresholds")
        ),
        AuditEvent.objects.count(),
        list(Case.objects.values_list("id")),
    )
    form = _form_from(ladder_services.ladder_active().thresholds)
    posts = [
        "/ladder/draft/start/",
        "/ladder/draft/",
        "/ladder/draft/discard/",
        "/ladder/publish/",
        "/ladder/import/",
        "/ladder/versions/1/activate/",
    ]
    for url in posts:
        response = client.post(url, form)
        assert response.status_code in (302, 403), url
        if response.status_code == 302:
            assert response["Location"].startswith("/login/"), url
    after = (
        list(
            LadderVersion.objects.values_list("id", "state", "version", "is_active", "thresholds")
        ),
        AuditEvent.objects.count(),
        list(Case.objects.values_list("id")),
    )
    assert after == before
    readable = client.get("/ladder/").status_code
    assert readable == (200 if who == "qa_lead" else (302 if who == "anonymous" else 403))
    for url in [
        "/ladder/versions/1/",
        "/ladder/versions/1/export.yaml",
        "/ladder/draft/export.yaml",
    ]:
        assert client.get(url).status_code == readable
