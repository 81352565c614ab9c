"""What operators (policy admins) do to enforcement delivery, each audited: send messages again,
enable the receiver after a 410, submit statements of reasons again."""

from moderation_portal.core.audit import AuditAction, audit_record
from reviews.enforcement import delivery, transparency
from reviews.policies.services import ladder_active


def redeliver(*, user, ids: list[int], failed: bool) -> int:
    count = delivery.messages_redeliver(ids=ids, failed=failed)
    audit_record(
        action=AuditAction.ENFORCEMENT_REDELIVERED,
        object_type="outbox",
        object_id="",
        actor=user,
        data={"ids": ids[:1000], "failed": failed, "queued": count},
    )
    return count


def endpoint_enable(*, user) -> bool:
    return delivery.endpoint_enable(actor=user)


def statements_resubmit(*, user, ids: list[int], rejected: bool) -> int:
    # Rejected statements are written again under the active ladder's mapping: resending the
    # same fields would be rejected the same way.
    ladder = ladder_active()
    count = transparency.statements_resubmit(ids=ids, rejected=rejected, ladder=ladder)
    audit_record(
        action=AuditAction.STATEMENTS_RESUBMITTED,
        object_type="statement_of_reasons",
        object_id="",
        actor=user,
        data={
            "ids": ids[:1000],
            "rejected": rejected,
            "queued": count,
            "ladder_version": ladder.version,
        },
    )
    return count
