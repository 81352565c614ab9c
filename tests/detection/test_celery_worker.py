"""Publish through the real broker (Redis) to a real Celery worker process."""

import pytest
from django.conf import settings

from detection.models import DeadLetter
from moderation_portal.celery import app
from reviews.cases.intake import ingest_events_task
from reviews.models import Case
from tests import factories as f
from tests.detection.conftest import wait_for

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.skipif(
        not settings.REDIS_URL, reason="needs REDIS_URL: the suite runs against the real Redis"
    ),
]


def test_an_event_published_to_the_broker_becomes_a_case(celery_worker_process):
    assert app.conf.task_always_eager is False
    good, bad = (
        f.event(trace_id="trace-through-broker"),
        f.mutate(f.event(), "detection.scores", {"guns": 0.9}),
    )
    ingest_events_task.apply_async(args=[[good, bad, good]], queue="ingest")
    assert wait_for(
        lambda: Case.objects.filter(detection_event__event_id=good["event_id"]).exists()
    ), celery_worker_process.read_text()[-3000:]
    assert wait_for(lambda: DeadLetter.objects.filter(event_id=bad["event_id"]).exists())
    assert Case.objects.count() == 1
    log = celery_worker_process.read_text()
    assert "trace=trace-through-broker" in log
    assert "{'accepted': 1, 'duplicate': 1, 'rejected': 1}" in log
