"""The one writer of decisions, whatever their source: automatic, human, LLM-verified, QA
correction or appeal. Every decision gets, in the same transaction and through the same path,
its enforcement rows (reversing what a superseded decision enforced) with their outbox messages,
the statement of reasons of a restriction, its `decision_recorded` audit row, its QA sample and
the `decisions_recorded` signal (training labels, in active_learning); after commit, a
violation a person confirmed becomes a reference for similar flags, and open pages refresh.

Callers move their own row's state (a case's lease, a QA sample) in the same transaction.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from detection.evidence.banks import evidence_withdraw_for_decisions
from detection.models import Listing
from detection.tasks import reference_add_task
from moderation_portal.core import live, metrics
from moderation_portal.core.audit import SYSTEM, AuditAction, audit_event
from moderation_portal.core.models import AuditEvent
from moderation_portal.core.tracing import log_context
from moderation_portal.core.unsent import task_send
from reviews.appeals.strikes import (
    StrikeItem,
    proposals_open,
    proposals_resolve,
    strikes_record,
    suspension_problem,
)
from reviews.cases.models import Case
from reviews.decisions.metrics import decisions_count_on_commit
from reviews.decisions.models import Decision
from reviews.decisions.signals import decisions_recorded
from reviews.enforcement.models import Enforcement, OutboxMessage
from reviews.enforcement.services import enforcements_for, standing_enforcements
from reviews.enforcement.statements import statements_create
from reviews.policies.models import LadderVersion
from reviews.qa.sampling import qa_sample_for

logger = logging.getLogger(__name__)

MACHINE_SOURCES = frozenset({Decision.Source.AUTOMATIC, Decision.Source.LLM_VERIFIED})
HUMAN_CONFIRMATIONS = frozenset(
    {Decision.Source.HUMAN, Decision.Source.QA_CORRECTION, Decision.Source.APPEAL}
)


class DecisionRefused(ValueError):
    """A decision the rules do not allow (e.g. a machine suspending an account)."""

    def __init__(self, message: str, *, code: str = "refused"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DecisionSpec:
    """What was decided, validated already (reviews.decisions.rules)."""

    verdict: str
    policy: str | None
    action: str
    notes: str = ""
    time_on_case_ms: int | None = None


@dataclass
class NewDecision:
    case: Case
    source: str
    spec: DecisionSpec
    ladder: LadderVersion
    user: object | None = None
    label: str | None = None  # who decided when it was not a person ("system", "llm:<model>")
    llm_verdict: object | None = None
    supersedes: Decision | None = None
    audit_data: dict = field(default_factory=dict)


def decisions_record(*, new: list[NewDecision], now: datetime | None = None) -> list[Decision]:
    """Record decisions with all their side effects (see the module); the bulk path of ingest."""
    if not new:
        return []
    now = now or timezone.now()
    for item in new:
        if item.source in MACHINE_SOURCES and item.spec.action == Decision.Action.SUSPEND:
            raise DecisionRefused(
                "suspending an account always needs a person", code="suspension_needs_a_person"
            )
        if item.source not in MACHINE_SOURCES and item.user is None:
            raise DecisionRefused(f"a {item.source} decision needs the person who made it")
    with transaction.atomic():
        decisions = Decision.objects.bulk_create(
            [
                Decision(
                    case=item.case,
                    verdict=item.spec.verdict,
                    policy_id=item.spec.policy,
                    action=item.spec.action,
                    notes=item.spec.notes,
                    source=item.source,
                    decided_by=item.user,
                    ladder_version=item.ladder,
                    time_on_case_ms=item.spec.time_on_case_ms,
                    supersedes=item.supersedes,
                    llm_verdict=item.llm_verdict,
                    trace_id=item.case.trace_id,
                    created_at=now,
                )
                for item in new
            ]
        )
        listing_rows = Listing.objects.filter(
            id__in={item.case.listing_id for item in new}
        ).values_list("id", "seller_id", "external_id", "seller__external_id")
        seller_of = {row[0]: row[1] for row in listing_rows}
        external_ids = {row[0]: (row[2], row[3]) for row in listing_rows}
        for item in new:
            if item.spec.action == Decision.Action.SUSPEND:
                problem = suspension_problem(seller_of[item.case.listing_id])
                if problem:
                    raise DecisionRefused(problem, code="no_prior_warning")
        # The seller's strike ledger and open proposals are read and then written: two decisions
        # on one seller's listings take turns here (the same per-seller lock the outbox takes
        # below), or both would open a suspension proposal and one would fail.
        outbox_order_lock(set(seller_of.values()))
        strikes = strikes_record(
            [
                StrikeItem(
                    decision=decision,
                    supersedes=item.supersedes,
                    seller_id=seller_of[item.case.listing_id],
                    ladder=item.ladder,
                )
                for item, decision in zip(new, decisions, strict=True)
            ]
        )
        outbox: list[Enforcement] = []
        audits: list[AuditEvent] = []
        for item, decision in zip(new, decisions, strict=True):
            superseded = standing_enforcements(item.supersedes) if item.supersedes else []
            outbox += enforcements_for(
                decision,
                listing_id=item.case.listing_id,
                superseded=superseded,
                warn_seller=decision.pk in strikes.warn,
            )
            audits.append(
                audit_event(
                    action=AuditAction.DECISION_RECORDED,
                    object_type="case",
                    object_id=item.case.pk,
                    actor=item.user,
                    label=item.label or (None if item.user else SYSTEM),
                    trace_id=item.case.trace_id,
                    created_at=now,
                    data={
                        "decision_id": decision.pk,
                        "source": decision.source,
                        "verdict": decision.verdict,
                        "policy": decision.policy_id,
                        "action": decision.action,
                        "ladder_version": item.ladder.version,
                        "supersedes": item.supersedes.pk if item.supersedes else None,
                        "time_on_case_ms": item.spec.time_on_case_ms,
                        "warns_seller": decision.pk in strikes.warn,
                        **item.audit_data,
                    },
                )
            )
        Enforcement.objects.bulk_create(outbox)
        if outbox:
            sellers = {e.listing_id: seller_of[e.listing_id] for e in outbox}
            traces = {item.case.listing_id: item.case.trace_id for item in new}
            outbox_order_lock(set(sellers.values()))
            OutboxMessage.objects.bulk_create(
                [
                    OutboxMessage(
                        type=OutboxMessage.Type.ENFORCEMENT_ACTION,
                        enforcement=e,
                        listing_id=e.listing_id,
                        seller_id=sellers[e.listing_id],
                        trace_id=traces.get(e.listing_id, ""),
                        created_at=now,
                        next_attempt_at=now,
                    )
                    for e in outbox
                ]
            )
        AuditEvent.objects.bulk_create(audits)
        # A statement for each decision that restricts something new (a person confirming an
        # automatic removal restricts nothing new: its statement stands).
        restricting = {e.decision_id for e in outbox if e.reverses_id is None}
        statements_create([d for d in decisions if d.pk in restricting])
        proposals_resolve(new, decisions, now=now)
        proposals_open(
            strikes.proposals, {d.pk: item for item, d in zip(new, decisions, strict=True)}, now=now
        )
        for item, decision in zip(new, decisions, strict=True):
            qa_sample_for(decision=decision, case=item.case)
            if (
                decision.source != Decision.Source.AUTOMATIC
            ):  # an automatic decision's case is brand new: no page is open
                live.changed_on_commit(case_id=item.case.pk, what="decided")
        confirmed = [
            d
            for d in decisions
            if d.verdict == Decision.Verdict.VIOLATION and d.source in HUMAN_CONFIRMATIONS
        ]
        if confirmed:
            transaction.on_commit(lambda: _references_add(confirmed))
        _evidence_withdraw(new, decisions)
        _log_recorded(new, decisions, external_ids)
        decisions_recorded.send(sender=Decision, decisions=decisions)
        if metrics.ENABLED:
            decisions_count_on_commit(cases=[i.case for i in new], decisions=decisions, now=now)
    return decisions


OUTBOX_LOCK_CLASS = 7301  # the advisory-lock namespace of outbox ordering


def outbox_order_lock(seller_ids: set[int]) -> None:
    """Hold, until this transaction ends, a lock per seller whose messages it writes. Outbox ids
    then follow commit order per seller: a transaction writing a later message for a seller
    waits until the earlier one has committed, so delivery (which sends a seller's messages in
    id order) can never see a later message before an earlier one is visible. Sorted, so two
    transactions never wait on each other."""
    if connection.vendor != "postgresql" or not seller_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k ORDER BY k",
            [OUTBOX_LOCK_CLASS, sorted({s % 2_147_483_647 for s in seller_ids})],
        )


def _log_recorded(
    new: list[NewDecision], decisions: list[Decision], external_ids: dict[int, tuple[str, str]]
) -> None:
    event_field = Case._meta.get_field("detection_event")
    for item, decision in zip(new, decisions, strict=True):
        listing_id, seller_id = external_ids[item.case.listing_id]
        with log_context(
            trace_id=item.case.trace_id,
            case_id=item.case.pk,
            listing_id=listing_id,
            seller_id=seller_id,
            # Only when the case came with its event: a log line is not worth a query.
            model_version=item.case.detection_event.model_version
            if event_field.is_cached(item.case)
            else None,
        ):
            logger.info(
                "decision %s on case %s: %s, %s (%s)",
                decision.pk,
                item.case.pk,
                decision.verdict,
                decision.action,
                decision.source,
            )


def decision_record(**item) -> Decision:
    """Record one decision (keyword arguments of NewDecision) with all its side effects."""
    now = item.pop("now", None)
    return decisions_record(new=[NewDecision(**item)], now=now)[0]


def _references_add(decisions: list[Decision]) -> None:
    """A violation confirmed by a person becomes a reference for similar
    flags (detection's index).
    """
    for decision in decisions:
        with log_context(trace_id=decision.trace_id, case_id=decision.case_id):
            task_send(
                reference_add_task,
                args=[
                    decision.pk,
                    decision.case_id,
                    decision.case.detection_event_id,
                    decision.policy_id,
                    decision.action,
                    decision.created_at.isoformat(),
                ],
            )


def decision_latest(case: Case) -> Decision | None:
    return Decision.objects.filter(case=case).order_by("-created_at", "-id").first()


def _evidence_withdraw(new: list[NewDecision], decisions: list[Decision]) -> None:
    """A person took a violation back (an overturn, a QA correction to no violation or to another
    policy): the superseded decision's images leave the known-bad bank and the references, in
    this transaction."""
    for item, decision in zip(new, decisions, strict=True):
        old = item.supersedes
        if old is None or old.verdict != Decision.Verdict.VIOLATION:
            continue
        if decision.verdict == Decision.Verdict.VIOLATION and decision.policy_id == old.policy_id:
            continue
        how = (
            f"now {decision.policy_id}"
            if decision.verdict == Decision.Verdict.VIOLATION
            else "no violation"
        )
        evidence_withdraw_for_decisions(
            decision_ids=[old.pk],
            by_decision_id={old.pk: decision.pk},
            reason=f"{decision.get_source_display()} decision {decision.pk}: {how}",
            trace_ids={old.pk: item.case.trace_id},
        )
