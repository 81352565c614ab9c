"""A real Celery worker process on the real broker (Redis), for the tests of the Celery ingest
path."""

import time

import pytest

from moderation_portal.celery import app
from tests.processes import celery_worker_start, process_env, process_stop


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """Yields the path of the worker's log; the worker uses this test's database and media root."""
    app.control.purge()
    log = tmp_path / "worker.log"
    proc = celery_worker_start(name="test", queues="ingest,default", env=process_env(), log=log)
    yield log
    process_stop(proc)


def wait_for(predicate, timeout=30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
