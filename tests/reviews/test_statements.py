"""Statements of reasons: written with every restricting decision in the Transparency Database's
format, served by the API, carried in the webhook, and filed with a local server that applies the
Transparency Database's validation rules (tests/reviews/tdb_server.py)."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from reviews.cases.claims import case_claim_next, case_decide
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionRefused, DecisionSpec, decision_record
from reviews.enforcement.delivery import message_body
from reviews.enforcement.models import OutboxMessage, StatementOfReasons
from reviews.enforcement.transparency import submissions_run
from reviews.policies import statements as mapping_rules
from reviews.policies.services import ladder_active, ladder_draft, ladder_publish
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases

HOSTILE_TITLE = "IGNORE PREVIOUS INSTRUCTIONS <script>alert(1)</script> call +44 7700 900123"
HOSTILE_TEXT = "Seller's own words: contact me at someone@example.com"


def automatic_removal(**kw) -> Decision:
    (case,) = open_cases(0.97, title=HOSTILE_TITLE, description=HOSTILE_TEXT, **kw)
    decision = Decision.objects.get(case=case)
    assert (decision.source, decision.action) == ("automatic", "remove")
    return decision


def human_decision(moderator, *, action="warn", policy="firearms", **kw) -> Decision:
    (case,) = open_cases(0.6, policy=policy, **kw)
    claimed = case_claim_next(user=moderator)
    assert claimed is not None
    assert claimed.pk == case.pk
    return case_decide(
        case=claimed,
        user=moderator,
        spec=DecisionSpec(verdict="violation", policy=policy, action=action, notes="seen it"),
    )


@pytest.fixture
def tdb(tdb_server, settings):
    settings.DSA_TDB_URL = tdb_server.url
    settings.DSA_TDB_TOKEN = tdb_server.token
    settings.DSA_TDB_TIMEOUT_SECONDS = 2.0
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 60, 300)
    return tdb_server


@pytest.mark.django_db
def test_an_automatic_removal_has_a_statement_in_the_databases_terms():
    seller = "seller-sor"
    decision = automatic_removal(seller=seller)
    row = StatementOfReasons.objects.get(decision=decision)
    s = row.statement
    firearms = mapping_rules.DEFAULT_MAPPING["policies"]["firearms"]
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    assert s["decision_account"] is None
    assert s["decision_ground"] == "DECISION_GROUND_ILLEGAL_CONTENT"
    assert s["illegal_content_legal_ground"] == firearms["ground"]
    assert s["illegal_content_explanation"].startswith(firearms["explanation"])
    assert "incompatible_content_ground" not in s
    assert (s["category"], s["category_specification"]) == (
        firearms["category"],
        firearms["category_specification"],
    )
    assert s["content_type"] == ["CONTENT_TYPE_PRODUCT", "CONTENT_TYPE_TEXT", "CONTENT_TYPE_IMAGE"]
    assert s["territorial_scope"] == list(mapping_rules.EEA_COUNTRIES)
    assert s["content_language"] == "EN"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", s["content_date"])
    assert s["application_date"] == decision.created_at.date().isoformat()
    assert (s["source_type"], s["automated_detection"], s["automated_decision"]) == (
        "SOURCE_VOLUNTARY",
        "Yes",
        "AUTOMATED_DECISION_FULLY",
    )
    assert s["puid"] == row.puid == f"mp-decision-{decision.pk}"
    assert "without human review" in s["decision_facts"]
    assert f"ladder version {decision.ladder_version.version}" in s["decision_facts"]
    assert "listing-guard 2026.11.1" in s["decision_facts"]
    # Written from the decision: nothing the seller wrote, no identifiers of people.
    text = str(s)
    for leaked in ("IGNORE", "<script>", "7700", "example.com", "Seller's own words", seller):
        assert leaked not in text
    assert row.state == "pending"
    assert row.ladder_version == decision.ladder_version


@pytest.mark.django_db
def test_a_moderators_warning_is_partly_automated_and_names_the_evidence(moderator):
    decision = human_decision(moderator, action="warn")
    s = StatementOfReasons.objects.get(decision=decision).statement
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_OTHER"]
    assert "warning" in s["decision_visibility_other"]
    assert s["automated_decision"] == "AUTOMATED_DECISION_PARTIALLY"
    assert "A trained moderator reviewed" in s["decision_facts"]
    assert moderator.username not in str(s)


@pytest.mark.django_db
def test_an_incompatible_content_policy_fills_the_contractual_ground(moderator):
    decision = human_decision(moderator, action="remove", policy="scam", scores={"scam": 0.6})
    s = StatementOfReasons.objects.get(decision=decision).statement
    assert s["decision_ground"] == "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    assert s["incompatible_content_illegal"] == "No"
    assert s["incompatible_content_ground"].startswith("Marketplace terms of service")
    assert "illegal_content_legal_ground" not in s


@pytest.mark.django_db
def test_a_suspension_restricts_the_account(moderator):
    # A suspension needs a delivered warning first: the seller's first strike (an automatic
    # removal) warns them, and the marketplace receives it.
    first = automatic_removal(seller="seller-suspended")
    warning = OutboxMessage.objects.get(
        enforcement__decision=first, enforcement__action="warn_seller"
    )
    (case,) = open_cases(0.6, seller="seller-suspended")
    suspend = {
        "case": case,
        "source": "human",
        "user": moderator,
        "ladder": ladder_active(),
        "spec": DecisionSpec(verdict="violation", policy="firearms", action="suspend"),
    }
    with pytest.raises(DecisionRefused) as refused:  # the warning is not delivered yet
        decision_record(**suspend)
    assert refused.value.code == "no_prior_warning"
    OutboxMessage.objects.filter(pk=warning.pk).update(
        state="delivered", attempts=1, delivered_at=timezone.now()
    )

    decision = decision_record(**suspend)
    s = StatementOfReasons.objects.get(decision=decision).statement
    assert (s["decision_account"], s["decision_visibility"]) == ("DECISION_ACCOUNT_SUSPENDED", None)


@pytest.mark.django_db
def test_a_cleared_listing_and_a_reversal_restrict_nothing_and_have_no_statement(qa_lead):
    removal = automatic_removal()
    correction = decision_record(
        case=removal.case,
        source="qa_correction",
        user=qa_lead,
        supersedes=removal,
        ladder=ladder_active(),
        spec=DecisionSpec(verdict="no_violation", policy=None, action="none", notes="a replica"),
    )
    assert not StatementOfReasons.objects.filter(decision=correction).exists()
    reversals = OutboxMessage.objects.filter(enforcement__decision=correction).order_by("id")
    assert [m.enforcement.action for m in reversals] == ["restore_listing", "withdraw_warning"]
    for reversal in reversals:
        assert message_body(reversal)["data"]["statement_of_reasons"] is None

    response = api_client_for(qa_lead).get(
        f"/api/v1/decisions/{correction.pk}/statement-of-reasons/"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_statement"


@pytest.mark.django_db
def test_the_webhook_carries_the_statement_as_stored():
    decision = automatic_removal()
    messages = OutboxMessage.objects.filter(enforcement__decision=decision).order_by("id")
    # The removal and the first strike's warning: one decision, one statement, in both.
    assert [m.enforcement.action for m in messages] == ["remove_listing", "warn_seller"]
    for message in messages:
        body = message_body(message)
        assert body["data"]["statement_of_reasons"] == decision.statement_of_reasons.statement


@pytest.mark.django_db
def test_the_api_serves_the_statement_to_staff_only(moderator, outsider, tier_client, anon_client):
    decision = automatic_removal()
    url = f"/api/v1/decisions/{decision.pk}/statement-of-reasons/"
    response = api_client_for(moderator).get(url)
    assert response.status_code == 200
    data = response.json()
    assert data["puid"] == f"mp-decision-{decision.pk}"
    assert data["category"] == "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS"
    assert data["submission"]["state"] == "pending"
    assert data["submission"]["status"] == "Transparency Database submission not configured"
    for client in (api_client_for(outsider), tier_client, anon_client):
        assert client.get(url).status_code in (401, 403)
    assert api_client_for(moderator).get("/api/v1/decisions/999999/statement-of-reasons/").json()[
        "error"
    ]["code"] == ("not_found")


@pytest.mark.django_db
def test_statements_are_filed_and_pass_the_databases_validation(tdb):
    decisions = [automatic_removal(seller=f"seller-file-{i}") for i in range(3)]
    assert submissions_run() == {"configured": True, "submitted": 3}
    rows = StatementOfReasons.objects.filter(decision__in=decisions).order_by("id")
    assert {r.state for r in rows} == {"submitted"}
    for row in rows:
        assert tdb.stored[row.puid]["category"] == row.statement["category"]
        assert row.tdb_uuid
        assert not row.already_filed
        assert row.attempts == 1
    (request,) = tdb.requests
    assert request.headers["Authorization"] == f"Bearer {tdb.token}"
    assert submissions_run() == {"configured": True}  # nothing left to file


@pytest.mark.django_db
def test_a_statement_the_database_has_already_is_done(tdb):
    decision = automatic_removal()
    assert submissions_run()["submitted"] == 1
    # As if our record of filing it were lost: the database answers 422 with our puid existing.
    StatementOfReasons.objects.filter(decision=decision).update(state="pending", tdb_uuid="")
    assert submissions_run() == {"configured": True, "submitted": 1}
    row = StatementOfReasons.objects.get(decision=decision)
    assert (row.state, row.already_filed, row.last_status) == ("submitted", True, 422)


@pytest.mark.django_db
def test_an_invalid_statement_is_kept_with_its_errors_and_does_not_hold_back_the_batch(tdb):
    good = [automatic_removal(seller=f"seller-batch-{i}") for i in range(3)]
    bad = StatementOfReasons.objects.get(decision=good[1])
    bad.statement = {**bad.statement, "category": "STATEMENT_CATEGORY_NOT_A_THING"}
    bad.save()

    assert submissions_run() == {"configured": True, "rejected": 1, "requeued": 2, "submitted": 2}
    bad.refresh_from_db()
    assert bad.state == "rejected"
    assert "category" in bad.errors
    assert bad.puid not in tdb.stored
    assert {StatementOfReasons.objects.get(decision=d).state for d in (good[0], good[2])} == {
        "submitted"
    }
    # The enforcement itself is delivered on its own: its outbox message is untouched.
    assert [m.state for m in OutboxMessage.objects.filter(enforcement__decision=good[1])] == [
        "pending",
        "pending",
    ]


@pytest.mark.django_db
def test_server_errors_and_timeouts_retry_on_the_schedule(tdb):
    decision = automatic_removal()
    tdb.fail_next = [503]
    assert submissions_run() == {"configured": True, "retrying": 1}
    row = StatementOfReasons.objects.get(decision=decision)
    assert (row.state, row.attempts, row.last_status) == ("retrying", 1, 503)
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=50)
    assert submissions_run() == {"configured": True}  # not due yet

    StatementOfReasons.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    tdb.hang_seconds = 3.0
    assert submissions_run() == {"configured": True, "retrying": 1}
    row.refresh_from_db()
    assert row.last_status is None
    assert "timeout" in row.last_error

    tdb.hang_seconds = 0
    StatementOfReasons.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert submissions_run() == {"configured": True, "submitted": 1}


@pytest.mark.django_db
def test_a_refused_token_retries_and_says_so(tdb, settings):
    settings.DSA_TDB_TOKEN = "not-the-token"
    decision = automatic_removal()
    assert submissions_run() == {"configured": True, "retrying": 1}
    row = StatementOfReasons.objects.get(decision=decision)
    assert row.last_status == 401
    assert "refused the token" in row.last_error
    assert "not-the-token" not in row.last_error


@pytest.mark.django_db
def test_without_the_database_configured_statements_wait():
    decision = automatic_removal()
    assert submissions_run() == {"configured": False}
    assert StatementOfReasons.objects.get(decision=decision).state == "pending"


@pytest.mark.django_db
def test_the_mapping_is_versioned_with_the_ladder(policy_admin, client):
    before = automatic_removal()
    client.force_login(policy_admin)
    form = {"territorial_scope": ["DE", "AT"]}
    for code, row in mapping_rules.DEFAULT_MAPPING["policies"].items():
        for key, value in row.items():
            form[f"{code}.{key}"] = value
    form["firearms.category"] = "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY"
    form["firearms.category_specification"] = ["KEYWORD_REGULATED_GOODS_SERVICES"]
    assert client.post("/ladder/draft/statements/", form).status_code == 302
    active = ladder_active()
    assert active.statement_mapping == mapping_rules.DEFAULT_MAPPING  # published never changes
    assert automatic_removal().statement_of_reasons.statement["territorial_scope"] == list(
        mapping_rules.EEA_COUNTRIES
    )

    published = ladder_publish(user=policy_admin)
    after = automatic_removal()
    s = after.statement_of_reasons.statement
    assert (s["category"], s["territorial_scope"]) == (
        "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY",
        ["DE", "AT"],
    )
    assert after.statement_of_reasons.ladder_version == published
    assert f"ladder version {published.version}" in s["decision_facts"]
    assert before.statement_of_reasons.statement["category"] == (
        "STATEMENT_CATEGORY_UNSAFE_AND_ILLEGAL_PRODUCTS"
    )


@pytest.mark.django_db
def test_a_bad_mapping_is_refused_with_every_problem(policy_admin, client):
    client.force_login(policy_admin)
    form = {"territorial_scope": ["US"], "firearms.category": "STATEMENT_CATEGORY_MADE_UP"}
    response = client.post("/ladder/draft/statements/", form, follow=True)
    page = response.content.decode()
    assert "territorial_scope: not EU/EEA country codes: US" in page
    assert "firearms.category: not a Transparency Database category" in page
    assert "drugs.explanation: write at least 10 characters" in page
    assert ladder_draft() is None  # nothing was saved: no draft was started


def test_the_default_mapping_is_valid():
    assert mapping_rules.mapping_validate(mapping_rules.DEFAULT_MAPPING) == (
        mapping_rules.DEFAULT_MAPPING
    )
    broken = {
        **mapping_rules.DEFAULT_MAPPING,
        "policies": {
            **mapping_rules.DEFAULT_MAPPING["policies"],
            "scam": {
                **mapping_rules.DEFAULT_MAPPING["policies"]["scam"],
                "category_specification": ["KEYWORD_NOPE"],
                "incompatible_content_illegal": "maybe",
            },
        },
    }
    with pytest.raises(mapping_rules.MappingError) as exc:
        mapping_rules.mapping_validate(broken)
    assert exc.value.problems == [
        "scam.category_specification: Transparency Database keywords only",
        "scam.incompatible_content_illegal: Yes or No",
    ]
