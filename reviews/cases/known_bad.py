"""What a flag does when one of its images re-uploads an image a person banned: the hash step
matched it with a known-bad entry that a confirmed decision put in the bank
(detection.evidence.banks). The active ladder's rule for the banned image's policy
(reviews.policies.repeat, `known_bad`) decides:

- `review_top`: the case goes before every other case of its queue; a case the ladder closed
  without a decision (monitor) is reopened into the review queue;
- `auto_remove`: an automatic removal through the one decision writer when nobody decided the
  case yet and no moderator holds it (one who does decides it, and it is at the top of the
  queue should they give it back); the case closes as an automatic action's does;
- `show`: evidence on the case only.

Matches with several policies follow the strongest rule among them, and within it the closest
match. Safe to run twice (the signal may fire twice): what is done already is not done again, and
only a change is audited.
"""

import logging

from django.db import transaction
from django.utils import timezone

from detection.models import HashMatch, KnownBadImage
from moderation_portal.core import live
from moderation_portal.core.audit import SYSTEM, AuditAction, audit_record
from moderation_portal.core.tracing import trace
from reviews.cases.models import Case, Queue
from reviews.cases.priority import priority_is_top, priority_key_top
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec, decision_record
from reviews.policies.repeat import rules_for
from reviews.policies.services import ladder_active

logger = logging.getLogger(__name__)

SHOW, REVIEW_TOP, AUTO_REMOVE = "show", "review_top", "auto_remove"
RULE_STRENGTH = {SHOW: 0, REVIEW_TOP: 1, AUTO_REMOVE: 2}
MAX_REASON = 200  # Case.route_reason


def known_bad_route(*, event_id: int) -> str | None:
    """Route the case of `event_id` by its matches with banned images (see the module). Returns
    what was done (`auto_removed`, `reopened`, `top_of_queue`, `left_to_moderator`), or None."""
    matches = list(
        HashMatch.objects.filter(
            event_id=event_id,
            known_bad__source=KnownBadImage.Source.DECISION,
            known_bad__withdrawn_at__isnull=True,
        )
        .select_related("known_bad")
        .order_by("distance", "id")
    )
    if not matches:
        return None
    ladder = ladder_active()
    now = timezone.now()
    with transaction.atomic():
        case = Case.objects.select_for_update().filter(detection_event_id=event_id).first()
        # an image banned by this very case's decision is its own evidence, not a re-upload
        matches = [m for m in matches if case is not None and m.known_bad.case_id != case.id]
        if not matches:
            return None
        rules = {
            m.known_bad.policy: rules_for(ladder, m.known_bad.policy).get("known_bad", REVIEW_TOP)
            for m in matches
        }
        match = max(matches, key=lambda m: RULE_STRENGTH.get(rules[m.known_bad.policy], 0))
        rule = rules[match.known_bad.policy]
        if rule not in (REVIEW_TOP, AUTO_REMOVE) or case.decisions.exists():
            return None
        banned = match.known_bad
        reason = (
            f"re-upload of an image banned by decision {banned.decision_id} "
            f"({banned.policy}, {match.get_kind_display()}, distance {match.distance})"
        )
        removal = None
        if rule == AUTO_REMOVE and case.state in (Case.State.QUEUED, Case.State.CLOSED):
            outcome = "auto_removed"
            # closed first: the removal's strike may open a suspension proposal, which moves the
            # case to the escalation queue, and that must stand
            Case.objects.filter(id=case.id).update(
                state=Case.State.CLOSED,
                route=Case.Route.AUTO_ACTION,
                decided_at=now,
                route_reason=_appended(case.route_reason, reason),
                **(
                    {"llm_state": Case.LlmState.NOT_APPLICABLE}  # nothing left to verify
                    if case.llm_state == Case.LlmState.PENDING
                    else {}
                ),
            )
            removal = decision_record(
                case=case,
                source=Decision.Source.AUTOMATIC,
                ladder=ladder,
                now=now,
                spec=DecisionSpec(
                    verdict=Decision.Verdict.VIOLATION,
                    policy=banned.policy,
                    action=Decision.Action.REMOVE,
                    notes=f"Automatic removal: {reason}",
                ),
                audit_data={"known_bad_id": banned.id, "hash_match_id": match.id},
            )
            changes = {}
        elif case.state == Case.State.CLOSED:
            outcome = "reopened"
            changes = {
                "state": Case.State.QUEUED,
                "route": Case.Route.HUMAN_REVIEW,
                "queue_kind": Queue.Kind.REVIEW,
                "priority_key": priority_key_top(case.priority_key),
            }
        elif case.state in (Case.State.QUEUED, Case.State.CLAIMED):
            if priority_is_top(case.priority_key):
                return None
            outcome = "top_of_queue" if rule == REVIEW_TOP else "left_to_moderator"
            changes = {"priority_key": priority_key_top(case.priority_key)}
        else:
            return None
        if changes:
            changes["route_reason"] = _appended(case.route_reason, reason)
            Case.objects.filter(id=case.id).update(**changes)
        audit_record(
            action=AuditAction.KNOWN_BAD_MATCH_ROUTED,
            obj=case,
            label=SYSTEM,
            trace_id=case.trace_id,
            data={
                "rule": rule,
                "outcome": outcome,
                "policy": banned.policy,
                "ladder_version": ladder.version,
                "known_bad_id": banned.id,
                "banned_by_decision_id": banned.decision_id,
                "banned_case_id": banned.case_id,
                "hash_match_id": match.id,
                "distance": match.distance,
                "from_state": case.state,
                "from_route": case.route,
                "removal_decision_id": removal.pk if removal else None,
            },
        )
        live.changed_on_commit(case_id=case.id, what="routed")
    with trace(case.trace_id):
        logger.info("case %s %s: %s", case.pk, outcome.replace("_", " "), reason)
    return outcome


def _appended(route_reason: str, reason: str) -> str:
    """The routing reason with `reason` after it, within the column; the new reason is kept."""
    if not route_reason:
        return reason[:MAX_REASON]
    suffix = f"; {reason}"
    if len(route_reason) + len(suffix) <= MAX_REASON:
        return route_reason + suffix
    return (route_reason[: max(0, MAX_REASON - len(suffix) - 1)] + "…" + suffix)[:MAX_REASON]
