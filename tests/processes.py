"""The portal's own processes for tests that need them for real: a Celery worker on the real
broker and the web process served by Daphne, each on this test's database and media root."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def process_env(*, without: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment less the names in `without`, pointed at this test's database
    and media root, with tasks sent to the broker rather than run in place; then `extra`."""
    db = connection.settings_dict
    dropped = set(without)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        CELERY_EAGER="false",
    )
    env.update(extra)
    return env


def complete_lines(path: Path) -> list[str]:
    """The lines of `path` written to the end so far."""
    return path.read_text().split("\n")[:-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_stop(proc: subprocess.Popen, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it is still running 15 s later; to the whole process group it
    leads where `group`."""
    if proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(5)


def _spawn(
    args: list[str], env: dict[str, str], log: Path, *, own_group: bool = False
) -> subprocess.Popen:
    """`python -m` with `args`, from the repository root, its output (stdout and stderr) in
    `log`; with `own_group` it leads a process group of its own."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )


def _started(
    proc: subprocess.Popen,
    log: Path,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    group: bool = False,
) -> None:
    """Returns once `ready()`; fails the test with the end of the log, and stops the process,
    if it exits or is not ready within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            process_stop(proc, group=group)
            pytest.fail(f"{what} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.1)


def celery_worker_start(
    *,
    name: str,
    queues: str,
    env: dict[str, str],
    log: Path,
    pool: str = "solo",
    own_group: bool = False,
    timeout: float = 60,
) -> subprocess.Popen:
    """Starts one Celery worker (concurrency 1, INFO, no heartbeat, gossip or mingle) consuming
    `queues` (comma-separated), its output in `log`; returns it once it says it is ready. With
    `own_group` it leads its own process group, which `process_stop(..., group=True)` ends."""
    proc = _spawn(
        [
            "celery",
            "-A",
            "moderation_portal",
            "worker",
            "-Q",
            queues,
            "--concurrency",
            "1",
            "--pool",
            pool,
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}-{os.getpid()}@%h",
        ],
        env,
        log,
        own_group=own_group,
    )
    _started(
        proc,
        log,
        lambda: any(" ready." in line for line in complete_lines(log)),
        timeout=timeout,
        what=f"the Celery worker {name}",
        group=own_group,
    )
    return proc


def daphne_start(
    *, env: dict[str, str], log: Path, options: Iterable[str] = (), timeout: float = 60
) -> tuple[subprocess.Popen, str]:
    """Serves the portal with Daphne (and `options`) on a free port of 127.0.0.1, its output in
    `log`; returns the process and its base URL once `/healthz` answers."""
    port = free_port()
    proc = _spawn(
        [
            "daphne",
            *options,
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "moderation_portal.asgi:application",
        ],
        env,
        log,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return True
        except OSError:
            return False

    _started(proc, log, healthy, timeout=timeout, what="the portal")
    return proc, base
