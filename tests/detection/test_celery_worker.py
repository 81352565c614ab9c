"""Publish through the real broker (Redis) to a real Celery worker process."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from detection.models import DeadLetter
from detection.tasks import ingest_events_task
from moderation_portal.celery import app
from reviews.models import Case
from tests import factories as f

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL: the suite runs against the real Redis"),
]


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["CELERY_EAGER"] = "false"
    app.control.purge()
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "moderation_portal", "worker", "-Q", "ingest,default",
         "--concurrency", "1", "--pool", "solo", "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
         "--without-mingle", "-n", f"test-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "ready" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    yield log
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_an_event_published_to_the_broker_becomes_a_case(celery_worker_process):
    assert app.conf.task_always_eager is False
    good, bad = f.event(trace_id="trace-through-broker"), f.mutate(f.event(), "detection.scores", {"guns": 0.9})
    ingest_events_task.apply_async(args=[[good, bad, good]], queue="ingest")
    assert wait_for(lambda: Case.objects.filter(detection_event__event_id=good["event_id"]).exists()), (
        celery_worker_process.read_text()[-3000:]
    )
    assert wait_for(lambda: DeadLetter.objects.filter(event_id=bad["event_id"]).exists())
    assert Case.objects.count() == 1
    log = celery_worker_process.read_text()
    assert "trace=trace-through-broker" in log
    assert "{'accepted': 1, 'duplicate': 1, 'rejected': 1}" in log
