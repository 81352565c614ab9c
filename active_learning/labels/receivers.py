"""Where judgements become labels: connected in ActiveLearningConfig.ready(). The reviews layer
knows nothing of labels; it announces decisions (reviews.decisions.signals) and saves QA
reviews, and these receivers write the labels in the same transaction."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from active_learning.labels.services import label_qa_review, labels_for_decisions
from reviews.decisions.models import Decision
from reviews.decisions.signals import decisions_recorded
from reviews.qa.models import QaReview


@receiver(decisions_recorded, sender=Decision, dispatch_uid="labels_for_decisions")
def _labels_for_decisions(sender, *, decisions, **_kwargs):
    labels_for_decisions(decisions=decisions)


@receiver(post_save, sender=QaReview, dispatch_uid="labels_for_qa_review")
def _labels_for_qa_review(sender, *, instance, created, raw=False, **_kwargs):
    # QA reviews are append-only: `created` is their only save. Fixtures (`raw`) carry their
    # labels already.
    if created and not raw:
        label_qa_review(review=instance)
