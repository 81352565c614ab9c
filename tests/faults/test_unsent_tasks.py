"""Follow-up work is not lost to a broker outage: flags ingested over REST while Redis is down
are stored, their enrichment tasks (refused by the broker) are kept as `UnsentTask` rows, and
beat sends them once Redis is back, where a worker runs them.

Redis here is the test's own (tests/faults/servers.py); Daphne, the worker and beat are real
processes pointed at it.
"""

import json
import subprocess
import sys
import urllib.request

import pytest

from detection.models import DetectionEvent, EnrichmentStep
from moderation_portal.core.models import UnsentTask
from reviews.models import Case
from tests import factories as f
from tests.faults.servers import RedisServer, wait_until
from tests.processes import ROOT, celery_worker_start, daphne_start, process_env, process_stop

pytestmark = pytest.mark.django_db(transaction=True)


def _ingest(base: str, token: str, events: list[dict]) -> dict:
    request = urllib.request.Request(
        base + "/api/v1/detections/",
        data=json.dumps(events).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def test_tasks_the_broker_refused_are_kept_and_sent_when_it_is_back(service_token, tmp_path):
    broker = RedisServer()
    broker.start()
    env = process_env(REDIS_URL=broker.url(), UNSENT_TASKS_SWEEP_SECONDS="1")
    daphne, base = daphne_start(env=env, log=tmp_path / "daphne.log")
    worker = beat = None
    events = [f.event(score=0.6, seller=f"seller-unsent-{i}") for i in range(3)]
    try:
        broker.stop()
        answer = _ingest(base, service_token, events)
        assert [r["status"] for r in answer["results"]] == ["accepted"] * 3, answer
        stored = DetectionEvent.objects.filter(event_id__in=[e["event_id"] for e in events])
        assert stored.count() == 3
        assert Case.objects.filter(detection_event__in=stored).count() == 3
        # the broker refused the follow-ups: kept, with the case's log context, nothing started
        kept = UnsentTask.objects.filter(task="detection.enrich_event_task")
        assert sorted(t.args[0] for t in kept) == sorted(stored.values_list("id", flat=True))
        assert all(t.last_error and t.log_fields.get("trace_id") for t in kept)
        assert not EnrichmentStep.objects.exists()

        broker.start()
        worker = celery_worker_start(
            name="unsent", queues="enrich,default", env=env, log=tmp_path / "worker.log"
        )
        beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "moderation_portal",
                "beat",
                "--schedule",
                str(tmp_path / "beat-schedule"),
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=(tmp_path / "beat.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        # beat sends the kept tasks; the worker runs them: every event's steps exist
        assert wait_until(lambda: not UnsentTask.objects.exists(), timeout=60), (
            tmp_path / "beat.log"
        ).read_text()[-3000:]
        assert wait_until(
            lambda: (
                EnrichmentStep.objects.filter(event__in=stored).values("event").distinct().count()
                == 3
            ),
            timeout=90,
        ), (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        for proc in (beat, worker, daphne):
            if proc is not None:
                process_stop(proc)
        broker.close()
