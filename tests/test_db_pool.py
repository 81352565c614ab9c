"""The web process keeps to its connection budget: a real Daphne process on PostgreSQL, 50
concurrent moderators over the API, every request answered and the process's connections in
`pg_stat_activity` never above `DB_POOL_MAX_SIZE`; and when every pooled connection stays busy
past `DB_POOL_TIMEOUT_SECONDS`, a 503 with `Retry-After` in the API's one error shape (an HTML
503 for pages), never a 500.

Each process's connections carry an `application_name` of this test's own (set in the database
URL), so `pg_stat_activity` tells them apart from the test's and other servers'.
"""

import http.client
import json
import secrets
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client

from moderation_portal.core.access import MODERATOR
from reviews.models import Case
from tests.processes import daphne_start, process_env, process_stop
from tests.reviews.helpers import open_cases

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 50
ROUNDS = 2
CSRF = secrets.token_hex(16)  # a CSRF secret of the test's own; cookie and header carry it


def _dsn() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _portal(tmp_path, app_name: str, **env: str):
    return daphne_start(
        env=process_env(
            DATABASE_URL=f"{_dsn()}?application_name={app_name}",
            **env,
        ),
        log=tmp_path / f"{app_name}.log",
    )


def _moderators(n: int) -> list[str]:
    """n moderators, each logged in: their session cookies."""
    group = Group.objects.get(name=MODERATOR)
    cookies = []
    for i in range(n):
        user = User.objects.create_user(username=f"pool-mod-{i}")
        user.groups.add(group)
        client = Client()
        client.force_login(user)
        cookies.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
    return cookies


class _Api:
    """One moderator's keep-alive HTTP connection to the portal, with session and CSRF."""

    def __init__(self, base: str, session: str):
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.headers = {
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; csrftoken={CSRF}",
            "X-CSRFToken": CSRF,
            "Content-Type": "application/json",
        }

    def call(self, method: str, path: str, body=None) -> tuple[int, dict[str, str], bytes]:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers=self.headers)
        answer = self.conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()


class _ConnectionsWatch:
    """Samples the connections of `app_name` in pg_stat_activity until stopped."""

    def __init__(self, app_name: str):
        self.app_name, self.peak, self.samples = app_name, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def count(self, conn) -> int:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [self.app_name],
        ).fetchone()[0]

    def _run(self) -> None:
        with psycopg.connect(_dsn(), autocommit=True) as conn:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.count(conn))
                self.samples += 1
                time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def test_fifty_concurrent_clients_all_answered_within_the_connection_budget(tmp_path):
    budget = 4
    open_cases(*[0.7] * (CLIENTS * ROUNDS))
    sessions = _moderators(CLIENTS)
    app_name = f"pool-budget-{secrets.token_hex(3)}"
    proc, base = _portal(
        tmp_path,
        app_name,
        DB_POOL_MAX_SIZE=str(budget),
        DB_POOL_MIN_SIZE="1",
        DB_POOL_TIMEOUT_SECONDS="30",
    )
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def moderator(session: str) -> None:
        api = _Api(base, session)
        start.wait()
        try:
            for _ in range(ROUNDS):
                status, _, body = api.call("POST", "/api/v1/cases/claim-next/", {})
                got = [status]
                if status == 200:
                    case_id = json.loads(body)["id"]
                    got.append(api.call("GET", f"/api/v1/cases/{case_id}/")[0])
                    got.append(api.call("POST", f"/api/v1/cases/{case_id}/release/", {})[0])
                with lock:
                    statuses.update(got)
        except Exception as exc:  # noqa: BLE001 - every request must be answered
            with lock:
                failures.append(repr(exc))

    try:
        with _ConnectionsWatch(app_name) as watch:
            threads = [threading.Thread(target=moderator, args=(s,)) for s in sessions]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
    finally:
        process_stop(proc)

    assert not failures
    log = (tmp_path / f"{app_name}.log").read_text()
    assert set(statuses) <= {200, 204}, (statuses, log[-3000:])
    assert statuses[200] == 3 * CLIENTS * ROUNDS  # every claim, read and release answered
    assert watch.samples > 10
    assert 1 <= watch.peak <= budget
    # released claims go back to the queue; none is left held
    assert not Case.objects.filter(state=Case.State.CLAIMED).exists()


def test_pool_exhausted_answers_503_with_retry_after_in_the_error_shape(tmp_path):
    """The one pooled connection is held by a request waiting on a row lock the test holds; the
    next requests wait DB_POOL_TIMEOUT_SECONDS and are answered 503, the API in its one error
    shape, a page as an HTML page; once the lock goes, the held request completes."""
    [case] = open_cases(0.7)
    [session] = _moderators(1)
    user = User.objects.get(username="pool-mod-0")
    Case.objects.filter(id=case.id).update(
        state=Case.State.CLAIMED,
        claimed_by=user,
        claimed_at=case.created_at,
        lease_expires_at=case.created_at.replace(year=case.created_at.year + 1),
    )
    app_name = f"pool-exhausted-{secrets.token_hex(3)}"
    proc, base = _portal(
        tmp_path,
        app_name,
        DB_POOL_MAX_SIZE="1",
        DB_POOL_MIN_SIZE="1",
        DB_POOL_TIMEOUT_SECONDS="0.5",
        DB_UNAVAILABLE_RETRY_AFTER_SECONDS="7",
    )
    held: dict = {}
    try:
        with psycopg.connect(_dsn()) as locker:
            locker.execute("SELECT id FROM reviews_case WHERE id = %s FOR UPDATE", [case.id])

            def heartbeat() -> None:
                held["answer"] = _Api(base, session).call(
                    "POST", f"/api/v1/cases/{case.id}/heartbeat/"
                )

            waiter = threading.Thread(target=heartbeat)
            waiter.start()
            with psycopg.connect(_dsn(), autocommit=True) as watcher:
                for _ in range(600):  # until the heartbeat's connection waits on the lock
                    waiting = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                        " AND wait_event_type = 'Lock'",
                        [app_name],
                    ).fetchone()[0]
                    if waiting:
                        break
                    time.sleep(0.05)
                assert waiting == 1

            api_status, api_headers, api_body = _Api(base, session).call("GET", "/api/v1/cases/")
            page_status, page_headers, page_body = _Api(base, session).call("GET", "/queues/")
            locker.rollback()
        waiter.join(30)
    finally:
        process_stop(proc)

    assert api_status == 503
    assert api_headers["retry-after"] == "7"
    assert api_headers["content-type"].startswith("application/json")
    assert json.loads(api_body) == {
        "error": {
            "code": "pool_exhausted",
            "message": "Every database connection of this server is busy; try again shortly.",
        }
    }
    assert page_status == 503
    assert page_headers["retry-after"] == "7"
    assert page_headers["content-type"].startswith("text/html")
    assert b"Temporarily unavailable" in page_body
    # the request that held the connection was served once the lock went
    assert held["answer"][0] == 200


def test_pool_settings_are_validated(tmp_path):
    import subprocess
    import sys

    from tests.processes import ROOT

    def start(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"],
            cwd=ROOT,
            env=process_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )

    inverted = start(DB_POOL_MIN_SIZE="5", DB_POOL_MAX_SIZE="2")
    assert inverted.returncode != 0
    assert "DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE" in inverted.stderr
    assert "DB_POOL_TIMEOUT_SECONDS must be above 0" in start(DB_POOL_TIMEOUT_SECONDS="0").stderr
    assert start().returncode == 0
