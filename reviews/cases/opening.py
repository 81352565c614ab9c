"""Opening cases for newly stored detection events, routed by the active ladder version.

Called by ingest inside the transaction that stores the events (reviews.cases.intake), so an
accepted event never lacks its case and a case that cannot be opened takes its event with it
to the dead letters.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from detection.models import DetectionEvent, Listing
from detection.tasks import enrich_event_task
from llm_verify.services import configured as llm_configured
from moderation_portal.core import live, metrics
from moderation_portal.core.audit import AuditAction, audit_event
from moderation_portal.core.models import AuditEvent
from moderation_portal.core.tracing import log_context
from moderation_portal.core.unsent import task_send
from reviews.cases.metrics import cases_opened_record
from reviews.cases.models import Case, Queue
from reviews.cases.priority import priority_key
from reviews.cases.tasks import llm_verify_case_task
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec, NewDecision, decisions_record
from reviews.policies import ladder as ladder_rules
from reviews.policies.models import Policy
from reviews.policies.services import ladder_active

logger = logging.getLogger(__name__)

OPENED_BY = "detection-tier"
CLOSED_ROUTES = frozenset({Case.Route.AUTO_ACTION, Case.Route.MONITOR, Case.Route.ALLOW})


def cases_open_for_events(*, events: list[DetectionEvent]) -> list[Case]:
    """Open one case per event, record the automatic decisions the ladder takes, and enqueue
    enrichment and LLM verification after commit. Raises when a case cannot be opened."""
    ladder = ladder_active()
    policies = {p.code: p for p in Policy.objects.all()}
    now = timezone.now()
    listings = {
        row["id"]: row
        for row in Listing.objects.filter(id__in={e.listing_id for e in events}).values(
            "id", "region", "language", "seller_id", "external_id", "seller__external_id"
        )
    }
    reach = dict(
        Listing.objects.filter(seller_id__in={row["seller_id"] for row in listings.values()})
        .values("seller_id")
        .annotate(n=Count("id"))
        .values_list("seller_id", "n")
    )
    llm_ready = llm_configured()
    cases = [
        _case_for(
            event,
            ladder,
            policies[event.top_policy],
            listings[event.listing_id],
            reach,
            llm_ready,
            now,
        )
        for event in events
    ]
    Case.objects.bulk_create(cases)
    AuditEvent.objects.bulk_create(
        [
            audit_event(
                action=AuditAction.CASE_OPENED,
                object_type="case",
                object_id=case.pk,
                label=OPENED_BY,
                trace_id=case.trace_id,
                created_at=now,
                data={
                    "event_id": case.detection_event.event_id,
                    "route": case.route,
                    "reason": case.route_reason,
                    "ladder_version": ladder.version,
                    "policy": case.policy_id,
                    "score": case.score,
                },
            )
            for case in cases
        ]
    )
    decisions_record(
        new=[
            NewDecision(
                case=case,
                source=Decision.Source.AUTOMATIC,
                ladder=ladder,
                spec=DecisionSpec(
                    verdict=Decision.Verdict.VIOLATION,
                    policy=case.policy_id,
                    action=case.ladder_action,
                    notes=case.route_reason,
                ),
            )
            for case in cases
            if case.route == Case.Route.AUTO_ACTION
        ],
        now=now,
    )
    log_fields = {case.pk: _log_fields(case, listings[case.listing_id]) for case in cases}
    for case in cases:
        with log_context(**log_fields[case.pk]):
            logger.info("case %s opened: %s", case.pk, case.route_reason)
    to_enrich = [
        (c.detection_event_id, log_fields[c.pk]) for c in cases if c.route != Case.Route.ALLOW
    ]
    to_verify = [(c.pk, log_fields[c.pk]) for c in cases if c.llm_state == Case.LlmState.PENDING]
    live.changed_on_commit()
    transaction.on_commit(lambda: _enqueue_followups(to_enrich, to_verify))
    if metrics.ENABLED:
        cases_opened_record(cases)
    return cases


def _log_fields(case: Case, listing: dict) -> dict:
    return {
        "trace_id": case.trace_id,
        "case_id": case.pk,
        "listing_id": listing["external_id"],
        "seller_id": listing["seller__external_id"],
        "model_version": case.detection_event.model_version,
    }


def _case_for(event, ladder, policy, listing: dict, reach: dict, llm_ready: bool, now) -> Case:
    thresholds = ladder.thresholds[policy.code]
    routed = ladder_rules.route(event.top_score, thresholds)
    reason = routed.reason
    sla_due = event.emitted_at + timedelta(hours=thresholds["sla_hours"])
    state, llm_state, queue_kind = (
        Case.State.QUEUED,
        Case.LlmState.NOT_APPLICABLE,
        Queue.Kind.REVIEW,
    )
    if routed.route == Case.Route.LLM_VERIFY:
        if llm_ready:
            llm_state = Case.LlmState.PENDING
        else:
            llm_state = Case.LlmState.NOT_CONFIGURED
            reason += "; LLM verifier not configured, so a human reviews it"
    elif routed.route == Case.Route.AUTO_ACTION and routed.suspension_review:
        queue_kind = (
            Queue.Kind.ESCALATION
        )  # the removal is automatic; the suspension is a person's call
    elif routed.route in CLOSED_ROUTES:
        state = Case.State.CLOSED
    return Case(
        detection_event=event,
        listing_id=event.listing_id,
        trace_id=event.trace_id,
        policy=policy,
        score=event.top_score,
        region=listing["region"],
        language=listing["language"],
        route=routed.route,
        route_reason=reason[:200],
        ladder_version=ladder,
        ladder_action=routed.action,
        suspension_review=routed.suspension_review,
        state=state,
        queue_kind=queue_kind,
        priority_key=priority_key(
            sla_due_at=sla_due,
            severity=thresholds["severity"],
            score=event.top_score,
            seller_listings=reach.get(listing["seller_id"], 0),
        ),
        sla_due_at=sla_due,
        llm_state=llm_state,
        created_at=now,
        decided_at=now
        if state == Case.State.CLOSED and routed.route == Case.Route.AUTO_ACTION
        else None,
    )


def _enqueue_followups(
    event_ids: list[tuple[int, dict]], verify_case_ids: list[tuple[int, dict]]
) -> None:
    # Each task is sent under its case's log context, so the worker logs the case's trace id; a
    # task the broker refuses is kept and sent when it is back (moderation_portal.core.unsent).
    for event_id, log_fields in event_ids:
        with log_context(**log_fields):
            task_send(enrich_event_task, args=[event_id])
    # Verification normally starts when enrichment finishes (reviews.cases.receivers); this is
    # the fallback for enrichment that is slow or stuck: then the LLM verifies with what there is.
    for case_id, log_fields in verify_case_ids:
        with log_context(**log_fields):
            task_send(
                llm_verify_case_task,
                args=[case_id],
                countdown=settings.LLM_WAIT_FOR_ENRICHMENT_SECONDS,
            )
