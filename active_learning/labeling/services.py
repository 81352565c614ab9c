"""The labeling queue's writes: claim the next item under the portal's lease, answer it, give it
back. Label only: answering records the moderator's judgement and its training label, never a
Decision, an enforcement or a strike."""

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from active_learning.labeling.models import LabelingItem
from active_learning.labeling.selectors import labeling_waiting
from active_learning.labels.services import label_from_labeling_item
from moderation_portal.core.access import MODERATOR, has_role
from moderation_portal.core.audit import AuditAction, audit_record
from moderation_portal.core.leases import LeaseSpec, lease_claim_next, lease_finish, lease_return

MAX_TIME_ON_ITEM_MS = 24 * 3600 * 1000


def lease_spec() -> LeaseSpec[LabelingItem]:
    return LeaseSpec(
        model=LabelingItem,
        waiting=LabelingItem.State.PENDING,
        claimed=LabelingItem.State.CLAIMED,
        seconds=settings.LABELING_LEASE_SECONDS,
    )


class LabelingNotHeld(Exception):
    """The caller does not hold a live lease on the item."""


class LabelingRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def labeling_claim_next(*, user) -> LabelingItem | None:
    """The item the user holds, else the next waiting one under a new lease; None when none
    waits."""
    if not has_role(user, MODERATOR):
        raise LabelingRefused("forbidden", "Only moderators label.")
    item = lease_claim_next(lease_spec(), user=user, candidates=labeling_waiting())
    if item is not None:
        audit_record(action=AuditAction.LABELING_CLAIMED, obj=item, actor=user)
    return item


def labeling_answer(*, item: LabelingItem, user, answer: str) -> LabelingItem:
    """Record the answer of the lease holder and, in the same transaction, its label
    (active_learning.labels). Raises LabelingRefused (invalid, forbidden) or LabelingNotHeld."""
    if not has_role(user, MODERATOR):
        raise LabelingRefused("forbidden", "Only moderators label.")
    if answer not in LabelingItem.Answer.values:
        raise LabelingRefused("invalid", "answer is violation, no_violation or unsure.")
    now = timezone.now()
    with transaction.atomic():
        locked = LabelingItem.objects.select_for_update().filter(pk=item.pk).first()
        if locked is None or locked.claimed_at is None:
            raise LabelingNotHeld()
        spent = int((now - locked.claimed_at).total_seconds() * 1000)
        if not lease_finish(
            lease_spec(),
            pk=locked.pk,
            user=user,
            state=LabelingItem.State.ANSWERED,
            now=now,
            answer=answer,
            answered_by=user,
            answered_at=now,
            time_on_item_ms=max(0, min(spent, MAX_TIME_ON_ITEM_MS)),
        ):
            raise LabelingNotHeld()
        locked.refresh_from_db()
        label = label_from_labeling_item(locked)
        audit_record(
            action=AuditAction.LABELING_ANSWERED,
            obj=locked,
            actor=user,
            data={
                "answer": answer,
                "policy": locked.policy,
                "label_id": getattr(label, "label_id", None),
                "time_on_item_ms": locked.time_on_item_ms,
            },
        )
    return locked


def labeling_give_back(*, item: LabelingItem, user) -> bool:
    """Skip: the item goes back to the end of the queue, so the next claim offers another."""
    last = LabelingItem.objects.aggregate(last=Max("rank"))["last"] or 0
    return lease_return(lease_spec(), pk=item.pk, user=user, rank=last + 1)
