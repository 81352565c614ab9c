"""The audit log: who (or what) did which action to which object, with the trace id."""

import logging

from django.db import models

from moderation_portal.core.models import AuditEvent
from moderation_portal.core.tracing import trace

logger = logging.getLogger(__name__)

SYSTEM = "system"


class AuditAction(models.TextChoices):
    CASE_OPENED = "case_opened"
    CASE_CLAIMED = "case_claimed"
    CASE_RELEASED = "case_released"
    CASE_SKIPPED = "case_skipped"
    CASE_ESCALATED = "case_escalated"
    LEASE_EXPIRED = "lease_expired"
    DECISION_RECORDED = "decision_recorded"
    BULK_DECISION = "bulk_decision"
    LLM_VERDICT_RECORDED = "llm_verdict_recorded"
    QA_REVIEWED = "qa_reviewed"
    LADDER_DRAFT_CREATED = "ladder_draft_created"
    LADDER_DRAFT_SAVED = "ladder_draft_saved"
    LADDER_DRAFT_DISCARDED = "ladder_draft_discarded"
    LADDER_PUBLISHED = "ladder_published"
    LADDER_ACTIVATED = "ladder_activated"
    REFERENCE_INDEX_BUILT = "reference_index_built"
    REFERENCE_INDEX_ACTIVATED = "reference_index_activated"
    KNOWN_BAD_IMPORTED = "known_bad_imported"
    KNOWN_BAD_ADDED = "known_bad_added"
    KNOWN_BAD_WITHDRAWN = "known_bad_withdrawn"
    KNOWN_BAD_MATCH_ROUTED = "known_bad_match_routed"
    REFERENCE_WITHDRAWN = "reference_withdrawn"
    ENDPOINT_DISABLED = "webhook_endpoint_disabled"
    ENDPOINT_ENABLED = "webhook_endpoint_enabled"
    ENFORCEMENT_REDELIVERED = "enforcement_redelivered"
    STATEMENTS_RESUBMITTED = "statements_resubmitted"
    APPEAL_OPENED = "appeal_opened"
    APPEAL_CLAIMED = "appeal_claimed"
    APPEAL_DECIDED = "appeal_decided"
    SUSPENSION_PROPOSED = "suspension_proposed"
    SUSPENSION_PROPOSAL_RESOLVED = "suspension_proposal_resolved"
    LABELING_DRAWN = "labeling_drawn"
    LABELING_CLAIMED = "labeling_claimed"
    LABELING_ANSWERED = "labeling_answered"


def actor_label(user) -> str:
    return user.get_username() if user is not None else SYSTEM


def audit_event(
    *,
    action: AuditAction,
    object_type: str,
    object_id,
    actor=None,
    label: str | None = None,
    trace_id: str = "",
    data: dict | None = None,
    created_at=None,
) -> AuditEvent:
    """An unsaved row, for bulk writers; `audit_record` saves one."""
    row = AuditEvent(
        actor=actor,
        actor_label=(label or actor_label(actor))[:150],
        action=AuditAction(action).value,
        object_type=object_type,
        object_id=str(object_id),
        trace_id=trace_id or "",
        data=data or {},
    )
    if created_at is not None:
        row.created_at = created_at
    return row


def audit_record(
    *,
    action: AuditAction,
    obj=None,
    object_type: str | None = None,
    object_id=None,
    actor=None,
    label: str | None = None,
    trace_id: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Write one audit row about `obj` (or about `object_type`/`object_id`
    when no row is at hand).
    """
    event = audit_event(
        action=action,
        object_type=object_type or type(obj).__name__.lower(),
        object_id=object_id if obj is None else obj.pk,
        actor=actor,
        label=label,
        trace_id=trace_id,
        data=data,
    )
    event.save()
    with trace(trace_id or None):
        logger.info(
            "audit %s %s %s by %s",
            event.action,
            event.object_type,
            event.object_id,
            event.actor_label,
        )
    return event
