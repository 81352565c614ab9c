"""The QA queue: claim a sampled decision under the portal's lease, and agree with it or
correct it. A correction is a new decision (source qa_correction) that supersedes the original,
recorded through the one decision path, which reverses the original's enforcement."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from moderation_portal.core import live
from moderation_portal.core.audit import AuditAction, audit_record
from moderation_portal.core.leases import LeaseSpec, lease_claim_next, lease_finish
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec, decision_record
from reviews.policies.services import ladder_active
from reviews.qa.models import QaReview, QaSample

LEASE = timedelta(minutes=10)


def qa_lease() -> LeaseSpec:
    return LeaseSpec(
        model=QaSample,
        waiting=QaSample.State.PENDING,
        claimed=QaSample.State.CLAIMED,
        seconds=int(LEASE.total_seconds()),
        claimed_at_field=None,
    )


class QaNotHeld(Exception):
    pass


def qa_claim_next(*, user) -> QaSample | None:
    """The next sampled decision, disagreements first; nobody checks their own decisions."""
    candidates = QaSample.objects.exclude(decision__decided_by=user).order_by(
        "-disagreement", "created_at", "id"
    )
    return lease_claim_next(qa_lease(), user=user, candidates=candidates)


def qa_review_record(
    *, sample: QaSample, user, outcome: str, spec: DecisionSpec | None = None
) -> QaReview:
    """Agree with the sampled decision, or correct it with `spec` (required for a correction)."""
    original = sample.decision
    now = timezone.now()
    with transaction.atomic():
        if not lease_finish(
            qa_lease(), pk=sample.id, user=user, state=QaSample.State.REVIEWED, now=now
        ):
            raise QaNotHeld("you do not hold this QA sample")
        correction = None
        if outcome == QaReview.Outcome.AGREE:
            verdict, policy, action = original.verdict, original.policy_id, original.action
            notes = spec.notes if spec else ""
        else:
            if spec is None:
                raise ValueError("a correction needs the decision QA judges right")
            verdict, policy, action, notes = spec.verdict, spec.policy, spec.action, spec.notes
            correction = decision_record(
                case=sample.case,
                source=Decision.Source.QA_CORRECTION,
                ladder=ladder_active(),
                user=user,
                supersedes=original,
                now=now,
                spec=DecisionSpec(
                    verdict=verdict,
                    policy=policy,
                    action=action,
                    notes=f"QA correction of decision {original.id}: {notes}"[:5000],
                ),
            )
        review = QaReview.objects.create(
            sample=sample,
            reviewer=user,
            outcome=outcome,
            verdict=verdict,
            policy=policy or "",
            action=action,
            notes=notes,
            correction=correction,
            created_at=now,
        )
        audit_record(
            action=AuditAction.QA_REVIEWED,
            obj=sample.case,
            actor=user,
            trace_id=sample.case.trace_id,
            data={
                "sample_id": sample.id,
                "decision_id": original.id,
                "outcome": outcome,
                "correction_id": correction.id if correction else None,
            },
        )
        live.changed_on_commit(case_id=sample.case_id, what="decided")
    return review
