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
    decision: Decision, *, listing_id: int, superseded: list[Enforcement]
) -> list[Enforcement]:
    """The outbox rows (unsaved) for `decision`. `superseded` are the standing actions of the
    decision it replaces: each the new decision does not repeat is reversed, and a new action is
    added only if it did not already stand."""
    wanted = ACTION_FOR.get(decision.action)
    rows = []
    for previous in superseded:
        if previous.action != wanted:
            rows.append(
                Enforcement(
                    decision=decision,
                    listing_id=listing_id,
                    action=REVERSAL_OF[previous.action],
                    reverses=previous,
                    created_at=decision.created_at,
                )
            )
    if wanted is not None and wanted not in {p.action for p in superseded}:
        rows.append(
            Enforcement(
                decision=decision,
                listing_id=listing_id,
                action=wanted,
                created_at=decision.created_at,
            )
        )
    return rows


def standing_enforcements(decision: Decision) -> list[Enforcement]:
    """The restricting actions of `decision` that no later row has reversed."""
    rows = list(Enforcement.objects.filter(decision=decision, action__in=list(REVERSAL_OF)))
    reversed_ids = set(
        Enforcement.objects.filter(reverses__in=rows).values_list("reverses_id", flat=True)
    )
    return [row for row in rows if row.id not in reversed_ids]
