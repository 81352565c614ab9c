"""The strike ledger (DSA Art. 23): every removal or warning a decision enforces is a strike
against the seller, active for `STRIKE_WINDOW_DAYS`; a decision that supersedes it (an overturn,
a QA correction) withdraws it in the same transaction. Counts are always derived from the
ledger here, never taken from a client."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from reviews.appeals.models import Strike, StrikeWithdrawal
from reviews.decisions.models import Decision

STRIKING = frozenset({Decision.Action.REMOVE, Decision.Action.WARN})


def strikes_record(pairs: list[tuple[Decision, Decision | None, int]]) -> None:
    """For each (new decision, the decision it supersedes or None, seller id): withdraw the
    superseded decision's strike and add the new decision's, in the caller's transaction."""
    superseded = [old.pk for _, old, _ in pairs if old is not None]
    by_superseded = {old.pk: new for new, old, _ in pairs if old is not None}
    StrikeWithdrawal.objects.bulk_create(
        [
            StrikeWithdrawal(strike=strike, decision=by_superseded[strike.decision_id])
            for strike in Strike.objects.filter(decision_id__in=superseded, withdrawal=None)
        ]
    )
    window = timedelta(days=settings.STRIKE_WINDOW_DAYS)
    Strike.objects.bulk_create(
        [
            Strike(
                seller_id=seller_id,
                decision=new,
                policy=new.policy_id or "",
                weight=1,
                created_at=new.created_at,
                expires_at=new.created_at + window,
            )
            for new, _, seller_id in pairs
            if new.verdict == Decision.Verdict.VIOLATION and new.action in STRIKING
        ]
    )


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
                "withdrawn": withdrawal is not None,
                "withdrawn_by_decision": withdrawal.decision_id if withdrawal else None,
                "active": withdrawal is None and row.expires_at > now,
            }
        )
    return {
        "window_days": settings.STRIKE_WINDOW_DAYS,
        "active": sum(s["weight"] for s in strikes if s["active"]),
        "total": len(strikes),
        "strikes": strikes,
    }
