"""The appeals queue and its outcomes.

Appeals staff claim the next appeal under the portal's lease (moderation_portal.core.leases):
suspensions first, then the SLA, then the seller's reach; an appeal is never handed to the person
who made the decision it appeals. Deciding needs the live lease and a person with the appeals
role who is not the appealed decision's author (DSA Art. 20(4) and (6): a second look by someone
else, never by automated means alone: there is no code path without a person).

An overturn is one transaction through the one decision path: a new decision (source `appeal`)
supersedes the case's standing decision, so every standing restriction gets its reversal
(`restore_listing`, `withdraw_warning`, `lift_suspension`) in the outbox after the action it
reverses; the appeal is decided; an `appeal.resolved` message follows the reversals. An uphold
keeps everything and sends `appeal.resolved` with the reasoned answer.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from moderation_portal.core import metrics
from moderation_portal.core.access import APPEALS, has_role
from moderation_portal.core.audit import AuditAction, audit_record
from moderation_portal.core.leases import LeaseSpec, lease_claim_next, lease_finish, lease_return
from moderation_portal.core.tracing import trace
from reviews.appeals.models import Appeal
from reviews.decisions.models import Decision
from reviews.decisions.services import (
    DecisionSpec,
    decision_latest,
    decision_record,
    outbox_order_lock,
)
from reviews.enforcement.models import OutboxMessage
from reviews.policies.services import ladder_active

logger = logging.getLogger(__name__)

MAX_NOTES = 5000
OUTCOME_LABELS = {Appeal.Outcome.UPHOLD: "upheld", Appeal.Outcome.OVERTURN: "overturned"}


def lease_spec() -> LeaseSpec[Appeal]:
    return LeaseSpec(
        model=Appeal,
        waiting=Appeal.State.PENDING,
        claimed=Appeal.State.CLAIMED,
        seconds=settings.APPEAL_LEASE_SECONDS,
    )


class AppealNotHeld(Exception):
    """The caller does not hold a live lease on the appeal."""


class AppealRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def appeals_queue(user):
    """Waiting appeals this user may decide, in priority order."""
    return (
        Appeal.objects.filter(state=Appeal.State.PENDING)
        .exclude(Q(decision__decided_by=user))
        .order_by("-severity", "sla_due_at", "-seller_reach", "id")
    )


def appeal_claim_next(*, user) -> Appeal | None:
    if not has_role(user, APPEALS):
        raise AppealRefused("forbidden", "Only appeals staff work appeals.")
    appeal = lease_claim_next(lease_spec(), user=user, candidates=appeals_queue(user))
    if appeal is not None and appeal.claimed_at and appeal.state == Appeal.State.CLAIMED:
        audit_record(
            action=AuditAction.APPEAL_CLAIMED, obj=appeal, actor=user, trace_id=appeal.trace_id
        )
    return appeal


def appeal_release(*, appeal: Appeal, user) -> bool:
    return lease_return(lease_spec(), pk=appeal.pk, user=user)


def notes_problem(notes: object) -> str | None:
    if not isinstance(notes, str) or len(notes.strip()) < 10:
        return "Write the reasoned answer the seller will receive (at least 10 characters)."
    if len(notes) > MAX_NOTES:
        return f"At most {MAX_NOTES} characters."
    if "\x00" in notes:
        return "Contains a NUL character."
    return None


def appeal_decide(*, appeal: Appeal, user, outcome: str, notes: str) -> Appeal:
    """Decide an appeal the user holds (see the module). Raises AppealRefused (same_reviewer,
    forbidden, invalid) or AppealNotHeld."""
    if user is None or not getattr(user, "is_authenticated", False) or not has_role(user, APPEALS):
        raise AppealRefused("forbidden", "An appeal is decided by a person with the appeals role.")
    if outcome not in Appeal.Outcome.values:
        raise AppealRefused("invalid", "outcome is uphold or overturn.")
    problem = notes_problem(notes)
    if problem:
        raise AppealRefused("invalid", problem)
    if appeal.decision.decided_by_id is not None and appeal.decision.decided_by_id == user.pk:
        raise AppealRefused(
            "same_reviewer", "You made the appealed decision; someone else must review it."
        )
    now = timezone.now()
    with transaction.atomic():
        locked = Appeal.objects.select_for_update().get(pk=appeal.pk)
        if not (
            locked.state == Appeal.State.CLAIMED
            and locked.claimed_by_id == user.pk
            and locked.lease_expires_at is not None
            and locked.lease_expires_at > now
        ):
            raise AppealNotHeld()
        overturn = None
        if outcome == Appeal.Outcome.OVERTURN:
            standing = decision_latest(locked.case)
            overturn = decision_record(
                case=locked.case,
                source=Decision.Source.APPEAL,
                user=user,
                supersedes=standing,
                ladder=ladder_active(),
                spec=DecisionSpec(
                    verdict=Decision.Verdict.NO_VIOLATION,
                    policy=None,
                    action=Decision.Action.NONE,
                    notes=notes,
                ),
                audit_data={"appeal_id": locked.appeal_id},
            )
        if not lease_finish(
            lease_spec(),
            pk=locked.pk,
            user=user,
            state=Appeal.State.DECIDED,
            now=now,
            outcome=outcome,
            notes=notes,
            decided_by=user,
            decided_at=now,
            overturn_decision=overturn,
        ):
            raise AppealNotHeld()
        outbox_order_lock({locked.seller_id})
        OutboxMessage.objects.create(
            type=OutboxMessage.Type.APPEAL_RESOLVED,
            appeal=locked,
            listing_id=locked.case.listing_id,
            seller_id=locked.seller_id,
            trace_id=locked.trace_id,
            created_at=now,
            next_attempt_at=now,
        )
        audit_record(
            action=AuditAction.APPEAL_DECIDED,
            obj=locked,
            actor=user,
            trace_id=locked.trace_id,
            data={
                "outcome": outcome,
                "appeal_id": locked.appeal_id,
                "overturn_decision": overturn.pk if overturn else None,
            },
        )
        if metrics.ENABLED:
            appealed = appeal.decision  # loaded above: who decided it
            labels = (appealed.policy_id or "none", appealed.source, OUTCOME_LABELS[outcome])
            transaction.on_commit(lambda: metrics.APPEAL_OVERTURNS.labels(*labels).inc())
    locked.refresh_from_db()
    with trace(locked.trace_id, case_id=locked.case_id):
        logger.info("appeal %s decided: %s", locked.pk, outcome)
    return locked
