"""Every Celery task of the active_learning app, here so the worker's autodiscovery finds
them."""

from datetime import date

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from active_learning.labeling.sampling import labeling_draw
from active_learning.labels.tasks import export_labels_task  # the nightly export


@shared_task(name="active_learning.sample_for_labeling_task", soft_time_limit=600, time_limit=900)
def sample_for_labeling_task(day: str | None = None, budget: int | None = None) -> int:
    """The daily draw (beat, at LABELING_DRAW_HOUR). Safe to run twice: the day's draw is
    unique, so a second run returns the first one's. Returns the draw's id."""
    the_day = date.fromisoformat(day) if day else timezone.localdate()
    draw = labeling_draw(
        day=the_day, budget=settings.LABELING_DAILY_BUDGET if budget is None else budget
    )
    return draw.pk


__all__ = ["export_labels_task", "sample_for_labeling_task"]
