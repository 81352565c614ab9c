"""The nightly label export under beat (LABEL_EXPORT_HOUR); re-exported by active_learning.tasks
for the worker's autodiscovery."""

from celery import shared_task
from django.conf import settings
from django.utils import timezone


@shared_task(name="active_learning.export_labels_task", soft_time_limit=1800, time_limit=2100)
def export_labels_task(as_of: str | None = None) -> str:
    """Export the labels as of the start of the current hour (or `as_of`, ISO 8601) into
    LABEL_EXPORT_DIR; returns the version. Safe to run twice: a rerun within the hour finds the
    same database state and `as_of` (minus what was decided since, which counts only from the
    next hour) and rewrites the same version byte for byte."""
    from datetime import datetime

    from active_learning.labels.export import labels_export  # pyarrow: worker-side only

    when = (
        datetime.fromisoformat(as_of)
        if as_of
        else timezone.now().replace(minute=0, second=0, microsecond=0)
    )
    return labels_export(out_dir=settings.LABEL_EXPORT_DIR, as_of=when).version
