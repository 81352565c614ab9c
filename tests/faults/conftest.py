"""Fixtures for the fault-injection tests: real Celery worker processes that a test kills with
SIGKILL (the whole process group: the main process and its prefork pool), the broker left clean
between tests, and waiting on what the database shows."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from moderation_portal.celery import app
from tests.processes import celery_worker_start, process_env

# Every queue the portal routes to (settings.CELERY_TASK_ROUTES).
QUEUES = ("ingest", "enrich", "llm", "default")
# A killed worker's unacknowledged task goes back to its queue once this many seconds have passed
# since it was delivered (Redis's visibility timeout); the fresh worker restores it at start.
VISIBILITY_TIMEOUT_SECONDS = 3


def broker_clear() -> None:
    """Empties the portal's queues and the broker's record of delivered, unacknowledged tasks,
    so that nothing a killed worker held reaches the next test's workers."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            channel.queue_purge(queue)
        channel.client.delete(channel.unacked_key, channel.unacked_index_key)


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    """Returns once `predicate()` is true; fails the test saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def other_backends(where: str = "true") -> list[int]:
    """Process ids of the other sessions on this test's database matching `where` (SQL over
    pg_stat_activity): the workers' connections."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            f"AND pid <> pg_backend_pid() AND ({where})"
        )
        return [row[0] for row in cursor.fetchall()]


class Workers:
    """Starts real Celery workers (prefork, concurrency 1, each leading its own process group)
    on this test's database, with a short visibility timeout; kills them with SIGKILL."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, name: str, *, queues: str, **env: str) -> subprocess.Popen:
        log = self.tmp_path / f"{name}.log"
        proc = celery_worker_start(
            name=name,
            queues=queues,
            env=process_env(
                **{
                    "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_SECONDS),
                    "CELERY_UNACKED_RESTORE_SECONDS": "1",
                    **env,
                }
            ),
            log=log,
            pool="prefork",
            own_group=True,
        )
        self.started.append(proc)
        self.logs.append(log)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL to the worker and its pool process at once: nothing gets to clean up."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    @staticmethod
    def kill_pool_process(proc: subprocess.Popen) -> int:
        """SIGKILL to the worker's one pool process only; returns its pid."""
        (child,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(child), signal.SIGKILL)
        return int(child)

    def log_text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs if log.exists())

    def stop_all(self) -> None:
        # Killed too: what they held is cleared from the broker after them.
        for proc in self.started:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def workers(transactional_db, tmp_path):
    broker_clear()
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()
    broker_clear()
