import os

from celery import Celery

import moderation_portal.core.celery_context  # noqa: F401  (log context carried to workers)
from moderation_portal.core import celery_metrics  # noqa: F401  (task metrics from signals)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moderation_portal.settings")

app = Celery("moderation_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
