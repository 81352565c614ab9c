"""The strike ledger (DSA Art. 23) and its steps.

Every removal, warning or suspension a decision enforces is a strike against the seller, weighed
and timed by the decision's ladder version (reviews/policies/repeat.py). A decision that
supersedes it withdraws it in the same transaction; one that finds the same violation again (a
person confirming an automatic removal, a QA correction of the action) carries it over with its
original time, so confirming never resets a window. Counts are always derived from the ledger
here, never taken from a client.

Fresh strikes climb the steps: the first that reaches `warn_at` warns a seller with no standing
warning (the decision's enforcement gets a `warn_seller`), and `suspend_at` (or `suspend_share`
of the seller's listings) proposes a suspension: the case goes to the escalation queue. Only a
person suspends (reviews.decisions.services refuses machines), and only a seller whose warning
was delivered and not withdrawn (`suspension_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Sum
from django.utils import timezone

from detection.models import Listing
from reviews.appeals.models import Strike, StrikeWithdrawal, SuspensionProposal
from reviews.decisions.models import Decision
from reviews.enforcement.models import Enforcement, EnforcementAction, OutboxMessage
from reviews.policies.repeat import rules_for

STRIKING = frozenset({Decision.Action.REMOVE, Decision.Action.WARN, Decision.Action.SUSPEND})


@dataclass(frozen=True)
class StrikeItem:
    decision: Decision
    supersedes: Decision | None
    seller_id: int
    ladder: object  # the LadderVersion the decision was made under


@dataclass
class StrikeEffects:
    warn: set[int] = field(default_factory=set)  # decision ids that also warn the seller
    proposals: list[tuple[Decision, int, str, int]] = field(default_factory=list)


def _striking(decision: Decision) -> bool:
    return decision.verdict == Decision.Verdict.VIOLATION and decision.action in STRIKING


def strikes_record(items: list[StrikeItem]) -> StrikeEffects:
    """Withdraw superseded strikes, add the new decisions', and work out the steps they reach
    (see the module), in the caller's transaction."""
    superseded = {item.supersedes.pk: item for item in items if item.supersedes is not None}
    old_strikes = {
        s.decision_id: s
        for s in Strike.objects.filter(decision_id__in=list(superseded), withdrawal=None)
    }
    StrikeWithdrawal.objects.bulk_create(
        [
            StrikeWithdrawal(strike=strike, decision=superseded[old_id].decision)
            for old_id, strike in old_strikes.items()
        ]
    )
    fresh: list[StrikeItem] = []
    rows = []
    for item in items:
        new = item.decision
        if not _striking(new):
            continue
        rules = rules_for(item.ladder, new.policy_id or "")
        if rules["strike_weight"] == 0:
            continue
        carried = old_strikes.get(item.supersedes.pk) if item.supersedes else None
        if carried is not None and carried.policy == new.policy_id:
            created, expires = carried.created_at, carried.expires_at
        else:
            created = new.created_at
            expires = created + timedelta(days=rules["strike_window_days"])
            fresh.append(item)
        rows.append(
            Strike(
                seller_id=item.seller_id,
                decision=new,
                policy=new.policy_id or "",
                weight=rules["strike_weight"],
                created_at=created,
                expires_at=expires,
            )
        )
    Strike.objects.bulk_create(rows)
    return _steps(fresh)


def _steps(fresh: list[StrikeItem]) -> StrikeEffects:
    effects = StrikeEffects()
    if not fresh:
        return effects
    sellers = {item.seller_id for item in fresh}
    now = timezone.now()
    # The ledger before this batch; the batch's own strikes are added one by one below, so the
    # steps fall on the decision that reaches them.
    active = {
        row["seller_id"]: row
        for row in Strike.objects.filter(seller_id__in=sellers, withdrawal=None, expires_at__gt=now)
        .exclude(decision_id__in=[item.decision.pk for item in fresh])
        .values("seller_id")
        .annotate(weight=Sum("weight"), strikes=Count("id"))
    }
    struck = {}
    for seller_id, listing_id in (
        Strike.objects.filter(seller_id__in=sellers, withdrawal=None, expires_at__gt=now)
        .values_list("seller_id", "decision__case__listing_id")
        .distinct()
    ):
        struck.setdefault(seller_id, set()).add(listing_id)
    listings = dict(
        Listing.objects.filter(seller_id__in=sellers)
        .values("seller_id")
        .annotate(n=Count("id"))
        .values_list("seller_id", "n")
    )
    warned = set(
        standing_warnings()
        .filter(listing__seller_id__in=sellers)
        .values_list("listing__seller_id", flat=True)
    )
    suspended = set(
        standing(EnforcementAction.SUSPEND_SELLER)
        .filter(listing__seller_id__in=sellers)
        .values_list("listing__seller_id", flat=True)
    )
    proposed = set(
        SuspensionProposal.objects.filter(
            seller_id__in=sellers, state=SuspensionProposal.State.OPEN
        ).values_list("seller_id", flat=True)
    )
    for item in fresh:
        seller, decision = item.seller_id, item.decision
        rules = rules_for(item.ladder, decision.policy_id or "")
        figures = active.setdefault(seller, {"weight": 0, "strikes": 0})
        figures["weight"] = (figures["weight"] or 0) + rules["strike_weight"]
        figures["strikes"] += 1
        weight = figures["weight"]
        if (
            rules["warn_at"]
            and weight >= rules["warn_at"]
            and seller not in warned
            and decision.action != Decision.Action.SUSPEND
        ):
            warned.add(seller)
            if decision.action != Decision.Action.WARN:
                effects.warn.add(decision.pk)
        if seller in suspended or seller in proposed or decision.action == Decision.Action.SUSPEND:
            continue
        reason = None
        window = rules["strike_window_days"]
        if rules["suspend_at"] and weight >= rules["suspend_at"]:
            reason = (
                f"{weight} active strike weight (step {rules['suspend_at']}, "
                f"{decision.policy_id} window {window} days)"
            )
        elif (
            rules["suspend_share"]
            and figures["strikes"] >= 2
            and listings.get(seller)
            and len(struck.get(seller, ())) / listings[seller] >= rules["suspend_share"]
        ):
            reason = (
                f"{len(struck[seller])} of the seller's {listings[seller]} listings have an "
                f"active strike (step {rules['suspend_share']:.0%})"
            )
        if reason:
            proposed.add(seller)
            effects.proposals.append((decision, seller, f"suspension proposed: {reason}", weight))
    return effects


def standing(action: str):
    """Enforcement rows of `action` that no later row reversed."""
    return Enforcement.objects.filter(action=action, reversals__isnull=True)


def standing_warnings():
    return standing(EnforcementAction.WARN_SELLER)


def warning_delivered(seller_id: int) -> bool:
    """Whether the seller holds a warning the marketplace received and nobody withdrew."""
    return (
        standing_warnings()
        .filter(
            listing__seller_id=seller_id,
            message__state=OutboxMessage.State.DELIVERED,
        )
        .exists()
    )


def suspension_problem(seller_id: int) -> str | None:
    """Why this seller cannot be suspended now, or None."""
    if not standing_warnings().filter(listing__seller_id=seller_id).exists():
        return (
            "The seller has no standing warning; a suspension needs a prior warning (DSA Art. 23)."
            " Warn the seller instead."
        )
    if not warning_delivered(seller_id):
        return (
            "The seller's warning has not been delivered to the marketplace yet; a suspension "
            "waits until the warning has reached the seller."
        )
    return None


def seller_strikes(*, seller_id: int) -> dict:
    now = timezone.now()
    rows = list(
        Strike.objects.filter(seller_id=seller_id)
        .select_related("withdrawal")
        .order_by("-created_at", "-id")
    )
    strikes = []
    for row in rows:
        withdrawal = getattr(row, "withdrawal", None)
        strikes.append(
            {
                "decision_id": row.decision_id,
                "policy": row.policy,
                "weight": row.weight,
                "created_at": row.created_at.isoformat(),
                "expires_at": row.expires_at.isoformat(),
                "window_days": (row.expires_at - row.created_at).days,
                "withdrawn": withdrawal is not None,
                "withdrawn_by_decision": withdrawal.decision_id if withdrawal else None,
                "active": withdrawal is None and row.expires_at > now,
            }
        )
    proposals = SuspensionProposal.objects.filter(seller_id=seller_id)
    return {
        "active": sum(s["weight"] for s in strikes if s["active"]),
        "active_strikes": sum(1 for s in strikes if s["active"]),
        "total": len(strikes),
        "warned": standing_warnings().filter(listing__seller_id=seller_id).exists(),
        "warning_delivered": warning_delivered(seller_id),
        "suspended": standing(EnforcementAction.SUSPEND_SELLER)
        .filter(listing__seller_id=seller_id)
        .exists(),
        "suspension_proposals": [
            {
                "id": p.pk,
                "state": p.state,
                "reason": p.reason,
                "case_id": p.case_id,
                "decision_id": p.decision_id,
                "created_at": p.created_at.isoformat(),
                "resolved_by_decision": p.resolved_by_decision_id,
            }
            for p in proposals
        ],
        "strikes": strikes,
    }


def proposals_open(proposals: list[tuple[Decision, int, str, int]], items: dict, *, now) -> None:
    """Open the suspension proposals the steps reached: each case goes to the escalation queue,
    where a person decides (items: decision id → the NewDecision it was recorded from)."""
    from moderation_portal.core import live
    from moderation_portal.core.audit import AuditAction, audit_record
    from reviews.cases.models import Case, Queue

    for decision, seller_id, reason, weight in proposals:
        case = items[decision.pk].case
        proposal = SuspensionProposal.objects.create(
            seller_id=seller_id,
            case=case,
            decision=decision,
            reason=reason[:300],
            active_weight=weight,
            created_at=now,
        )
        Case.objects.filter(pk=case.pk).update(
            state=Case.State.QUEUED,
            queue_kind=Queue.Kind.ESCALATION,
            suspension_review=True,
            claimed_by=None,
            claimed_at=None,
            lease_expires_at=None,
        )
        audit_record(
            action=AuditAction.SUSPENSION_PROPOSED,
            obj=proposal,
            trace_id=case.trace_id,
            data={"case": case.pk, "decision": decision.pk, "reason": reason, "weight": weight},
        )
        live.changed_on_commit(case_id=case.pk, what="escalated")


def proposals_resolve(new: list, decisions: list[Decision], *, now) -> None:
    """A person's decision on a case with an open proposal settles it: suspended or declined.
    An overturn on appeal settles it too (its strike is gone); a waiting escalation then
    closes."""
    from moderation_portal.core.audit import AuditAction, audit_record
    from reviews.cases.models import Case

    people = {
        item.case.pk: decision
        for item, decision in zip(new, decisions, strict=True)
        if decision.source not in {Decision.Source.AUTOMATIC, Decision.Source.LLM_VERIFIED}
    }
    if not people:
        return
    for proposal in SuspensionProposal.objects.select_for_update().filter(
        case_id__in=list(people), state=SuspensionProposal.State.OPEN
    ):
        decision = people[proposal.case_id]
        suspended = decision.action == Decision.Action.SUSPEND
        proposal.state = (
            SuspensionProposal.State.SUSPENDED if suspended else SuspensionProposal.State.DECLINED
        )
        proposal.resolved_at = now
        proposal.resolved_by_decision = decision
        proposal.save(update_fields=["state", "resolved_at", "resolved_by_decision"])
        if decision.source == Decision.Source.APPEAL:
            Case.objects.filter(
                pk=proposal.case_id, state=Case.State.QUEUED, claimed_by=None
            ).update(state=Case.State.DECIDED, decided_at=now)
        audit_record(
            action=AuditAction.SUSPENSION_PROPOSAL_RESOLVED,
            obj=proposal,
            actor=decision.decided_by,
            data={"state": proposal.state, "decision": decision.pk},
        )
