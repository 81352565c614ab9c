"""Strikes and their steps on PostgreSQL (DSA Art. 23): the first strike warns, three strikes in
the window propose a suspension that waits for a person in the escalation queue, and nothing
suspends a seller until a person decides it after a delivered warning. The webhooks are checked
by the real verifying receiver."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from moderation_portal.core.models import AuditEvent
from reviews.appeals.models import Strike, SuspensionProposal
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.enforcement.models import Enforcement, OutboxMessage, StatementOfReasons
from reviews.policies.defaults import SENIOR_GROUP
from reviews.policies.models import LadderVersion
from reviews.policies.repeat import DEFAULT_RULES, RepeatRulesError, default_rules, rules_validate
from reviews.policies.services import ladder_active, ladder_draft_save, ladder_publish
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases
from tests.reviews.test_enforcement_delivery import receiver, run  # noqa: F401 (fixture)


def actions_of(case: Case) -> list[str]:
    return list(
        Enforcement.objects.filter(decision__case=case)
        .order_by("id")
        .values_list("action", flat=True)
    )


@pytest.fixture
def senior(moderator2):
    moderator2.groups.add(Group.objects.get_or_create(name=SENIOR_GROUP)[0])
    return User.objects.get(pk=moderator2.pk)


@pytest.mark.django_db
def test_the_first_strike_warns_the_seller_and_later_ones_do_not():
    first, second = open_cases(0.97, 0.97, seller="seller-warned")
    assert actions_of(first) == ["remove_listing", "warn_seller"]
    assert actions_of(second) == ["remove_listing"]
    warning = OutboxMessage.objects.get(enforcement__action="warn_seller")
    assert warning.seller.external_id == "seller-warned"
    assert Strike.objects.filter(seller=warning.seller).count() == 2
    assert not SuspensionProposal.objects.exists()
    # another seller's first strike warns that seller
    (other,) = open_cases(0.97, seller="seller-other")
    assert actions_of(other) == ["remove_listing", "warn_seller"]


@pytest.mark.django_db
def test_three_violations_propose_a_suspension_that_no_webhook_carries_until_a_human_decides(
    receiver,  # noqa: F811
    senior,
    moderator,
    client,
):
    cases = open_cases(0.97, 0.97, 0.97, seller="seller-repeat")
    third = Case.objects.get(pk=cases[2].pk)
    proposal = SuspensionProposal.objects.get()
    assert (proposal.state, proposal.case_id, proposal.active_weight) == ("open", third.pk, 3)
    assert "3 active strike weight" in proposal.reason
    assert (third.state, third.queue_kind, third.suspension_review) == (
        "queued",
        "escalation",
        True,
    )
    assert AuditEvent.objects.filter(action="suspension_proposed", object_id=proposal.pk).exists()

    run()
    sent = [(r.data["action"], r.verified) for r in receiver.requests]
    assert sorted(sent) == sorted([("remove_listing", True)] * 3 + [("warn_seller", True)]), (
        "the warning and the removals go out; no suspension"
    )
    assert not Enforcement.objects.filter(action="suspend_seller").exists()

    # a moderator outside the senior group does not get the escalation
    plain = api_client_for(moderator)
    assert (
        plain.post("/api/v1/cases/claim-next/", {"queue": "escalations"}, format="json").status_code
        == 404  # not a queue this moderator works
    )
    api = api_client_for(senior)
    claimed = api.post("/api/v1/cases/claim-next/", {"queue": "escalations"}, format="json")
    assert claimed.status_code == 200
    assert claimed.json()["id"] == third.pk
    client.force_login(senior)
    page = client.get(f"/cases/{third.pk}/")
    assert page.status_code == 200
    assert b"suspension proposed" in page.content
    assert b"warning was delivered" in page.content

    decided = api.post(
        f"/api/v1/cases/{third.pk}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "suspend", "notes": "3 in 90d"},
        format="json",
    )
    assert decided.status_code == 201, decided.json()
    suspension = Decision.objects.get(case=third, source="human")
    # the person's decision supersedes the automatic one: the removal stands, not sent twice
    assert suspension.supersedes.source == "automatic"
    assert actions_of(third) == ["remove_listing", "suspend_seller"]
    proposal.refresh_from_db()
    assert (proposal.state, proposal.resolved_by_decision_id) == ("suspended", suspension.pk)
    assert StatementOfReasons.objects.filter(decision=suspension).exists()
    # the strike is carried over with its time, never counted twice
    assert Strike.objects.filter(seller=proposal.seller, withdrawal=None).count() == 3

    run()
    actions = [r.data["action"] for r in receiver.requests]
    assert actions[-1] == "suspend_seller"
    assert actions.count("suspend_seller") == 1
    assert all(r.verified for r in receiver.requests)


@pytest.mark.django_db
def test_a_suspension_waits_for_a_delivered_warning(senior, settings):
    settings.ENFORCEMENT_WEBHOOK_URL = ""  # nothing is delivered: the warning is not out yet
    cases = open_cases(0.97, 0.97, 0.97, seller="seller-undelivered")
    third = cases[2]
    api = api_client_for(senior)
    assert (
        api.post("/api/v1/cases/claim-next/", {"queue": "escalations"}, format="json").json()["id"]
        == third.pk
    )
    refused = api.post(
        f"/api/v1/cases/{third.pk}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "suspend"},
        format="json",
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "no_prior_warning"
    assert not Decision.objects.filter(case=third, source="human").exists()
    assert Case.objects.get(pk=third.pk).claimed_by_id == senior.pk  # still theirs to decide
    # the person declines the suspension: the removal stands, nothing new is enforced
    declined = api.post(
        f"/api/v1/cases/{third.pk}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "remove"},
        format="json",
    )
    assert declined.status_code == 201
    assert actions_of(third) == ["remove_listing"]
    assert SuspensionProposal.objects.get().state == "declined"
    assert not StatementOfReasons.objects.filter(decision__source="human").exists()


@pytest.mark.django_db
def test_a_seller_never_warned_cannot_be_suspended(senior):
    draft_rules = default_rules()
    draft_rules["firearms"] = {**DEFAULT_RULES, "warn_at": 0, "suspend_at": 0}
    ladder_draft_save(user=senior, repeat_rules=rules_validate(draft_rules))
    ladder_publish(user=senior)
    (case,) = open_cases(0.999, seller="seller-unwarned")  # the ladder escalates it
    assert actions_of(case) == ["remove_listing"]
    api = api_client_for(senior)
    api.post("/api/v1/cases/claim-next/", {"queue": "escalations"}, format="json")
    refused = api.post(
        f"/api/v1/cases/{case.pk}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "suspend"},
        format="json",
    )
    assert refused.status_code == 422
    assert "no standing warning" in refused.json()["error"]["message"]


@pytest.mark.django_db
def test_overturning_the_first_removal_withdraws_its_warning_and_the_next_strike_warns_again(
    marketplace_client, appeals_staff
):
    (first,) = open_cases(0.97, seller="seller-again")
    removal = Enforcement.objects.get(decision__case=first, action="remove_listing")
    appeal = marketplace_client.post(
        "/api/v1/appeals/",
        {
            "appeal_id": "again-1",
            "enforcement_id": removal.pk,
            "seller_id": "seller-again",
            "statement": "It is a toy.",
            "submitted_at": timezone.now().isoformat(),
        },
        format="json",
    ).json()
    staff = api_client_for(appeals_staff)
    staff.post("/api/v1/appeals/claim-next/")
    decided = staff.post(
        f"/api/v1/appeals/{appeal['id']}/decision/",
        {"outcome": "overturn", "notes": "An orange-tipped toy; we restore it."},
        format="json",
    )
    assert decided.status_code == 200, decided.json()
    assert actions_of(first) == [
        "remove_listing",
        "warn_seller",
        "restore_listing",
        "withdraw_warning",
    ]
    (second,) = open_cases(0.97, seller="seller-again")
    assert actions_of(second) == ["remove_listing", "warn_seller"]


@pytest.mark.django_db
def test_strike_rules_are_versioned_with_the_ladder(client, policy_admin, outsider):
    client.force_login(policy_admin)
    form = {}
    for code, row in default_rules().items():
        form.update({f"{code}.{k}": str(v) for k, v in row.items()})
    bad = {**form, "firearms.warn_at": "3", "firearms.suspend_at": "3"}
    client.post("/ladder/draft/repeat/", bad)
    assert LadderVersion.objects.filter(state="draft").count() == 0
    page = client.get("/ladder/")
    assert b"must be below suspend_at" in page.content

    good = {**form, "firearms.strike_weight": "2", "firearms.strike_window_days": "30"}
    assert client.post("/ladder/draft/repeat/", good).status_code == 302
    draft = LadderVersion.objects.get(state="draft")
    assert draft.repeat_rules["firearms"]["strike_weight"] == 2
    assert ladder_active().repeat_rules["firearms"]["strike_weight"] == 1  # not yet published
    assert client.post("/ladder/publish/", {"notes": "firearms weigh double"}).status_code == 302
    published = ladder_active()
    assert published.version == 2
    assert published.repeat_rules["firearms"]["strike_window_days"] == 30
    assert AuditEvent.objects.filter(
        action="ladder_published", data__changes__contains=["repeat rules firearms.strike_weight"]
    ).exists()

    (case,) = open_cases(0.97, seller="seller-double")
    strike = Strike.objects.get(decision__case=case)
    assert strike.weight == 2
    assert strike.expires_at - strike.created_at == timedelta(days=30)

    client.force_login(outsider)
    assert client.post("/ladder/draft/repeat/", good).status_code == 403


def test_the_rules_validate_every_step():
    rules = default_rules()
    assert rules_validate(rules) == rules
    rules["drugs"] = {**DEFAULT_RULES, "warn_at": 0}
    with pytest.raises(RepeatRulesError, match="needs a prior warning"):
        rules_validate(rules)
    rules["drugs"] = {**DEFAULT_RULES, "known_bad": "delete_account", "strike_weight": True}
    with pytest.raises(RepeatRulesError) as raised:
        rules_validate(rules)
    assert len(raised.value.problems) == 2


@pytest.mark.django_db
def test_a_share_of_the_sellers_listings_proposes_a_suspension(policy_admin):
    rules = default_rules()
    rules["firearms"] = {**DEFAULT_RULES, "suspend_at": 0, "suspend_share": 0.5}
    ladder_draft_save(user=policy_admin, repeat_rules=rules_validate(rules))
    ladder_publish(user=policy_admin)
    open_cases(0.97, seller="seller-share")
    assert not SuspensionProposal.objects.exists()  # one strike is never enough
    open_cases(0.2, 0.2, seller="seller-share")  # allowed listings count in the share
    open_cases(0.97, seller="seller-share")  # 2 of 4 listings struck
    proposal = SuspensionProposal.objects.get()
    assert "2 of the seller's 4 listings" in proposal.reason


@pytest.mark.django_db
def test_the_seller_page_shows_the_ledger(client, moderator, qa_lead):
    open_cases(0.97, 0.97, seller="seller-page")
    seller_id = Strike.objects.first().seller_id
    client.force_login(moderator)
    page = client.get(f"/sellers/{seller_id}/")
    assert page.status_code == 200
    assert b'id="strikes-active">2<' in page.content
    assert page.content.count(b'class="strike strike-active"') == 2
    client.force_login(qa_lead)
    assert client.get(f"/sellers/{seller_id}/").status_code == 403
    client.force_login(moderator)
    assert client.get("/sellers/999999/").status_code == 404
