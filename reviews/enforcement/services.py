"""Which enforcement actions a decision causes, written to the outbox with the decision."""

from reviews.decisions.models import Decision
from reviews.enforcement.models import Enforcement, EnforcementAction

ACTION_FOR = {
    Decision.Action.REMOVE: EnforcementAction.REMOVE_LISTING,
    Decision.Action.WARN: EnforcementAction.WARN_SELLER,
    Decision.Action.SUSPEND: EnforcementAction.SUSPEND_SELLER,
}
REVERSAL_OF = {
    EnforcementAction.REMOVE_LISTING: EnforcementAction.RESTORE_LISTING,
    EnforcementAction.WARN_SELLER: EnforcementAction.WITHDRAW_WARNING,
    EnforcementAction.SUSPEND_SELLER: EnforcementAction.LIFT_SUSPENSION,
}


def enforcements_for(
    decision: Decision,
    *,
    listing_id: int,
    superseded: list[Enforcement],
    warn_seller: bool = False,
) -> list[Enforcement]:
    """The outbox rows (unsaved) for `decision`. `superseded` are the standing actions of the
    decision it replaces: each the new decision does not keep is reversed, and a new action is
    added only if it did not already stand. A decision that still finds a violation keeps a
    standing warning (the strike steps may have added it), and a suspension keeps the removal it
    was proposed on. `warn_seller`: the strike steps add a warning to this decision."""
    wanted = [ACTION_FOR[decision.action]] if decision.action in ACTION_FOR else []
    if warn_seller and EnforcementAction.WARN_SELLER not in wanted:
        wanted.append(EnforcementAction.WARN_SELLER)
    keep = set(wanted)
    if decision.verdict == Decision.Verdict.VIOLATION:
        keep.add(EnforcementAction.WARN_SELLER)
    if decision.action == Decision.Action.SUSPEND:
        keep.add(EnforcementAction.REMOVE_LISTING)
    rows = []
    for previous in superseded:
        if previous.action not in keep:
            rows.append(
                Enforcement(
                    decision=decision,
                    listing_id=listing_id,
                    action=REVERSAL_OF[previous.action],
                    reverses=previous,
                    created_at=decision.created_at,
                )
            )
    standing = {p.action for p in superseded}
    for action in wanted:
        if action not in standing:
            rows.append(
                Enforcement(
                    decision=decision,
                    listing_id=listing_id,
                    action=action,
                    created_at=decision.created_at,
                )
            )
    return rows


def standing_enforcements(decision: Decision) -> list[Enforcement]:
    """The restricting actions standing behind `decision`: its own and those it kept from the
    decisions it superseded (following the chain), that no later row has reversed."""
    chain, seen, current = [], set(), decision
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        chain.append(current.pk)
        current = current.supersedes
    rows = list(
        Enforcement.objects.filter(decision_id__in=chain, action__in=list(REVERSAL_OF)).order_by(
            "id"
        )
    )
    reversed_ids = set(
        Enforcement.objects.filter(reverses__in=rows).values_list("reverses_id", flat=True)
    )
    return [row for row in rows if row.id not in reversed_ids]
