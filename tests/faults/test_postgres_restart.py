"""PostgreSQL stopped, crashed and started again under a serving portal.

The module runs its own PostgreSQL cluster and Redis (tests/faults/servers.py), migrated once,
and one Daphne process on them that is never restarted. The test talks to it over HTTP as the
detection tier and moderators do, and reads the private database directly with psycopg.
"""

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests import factories as f
from tests.faults.servers import PostgresServer, RedisServer, wait_until
from tests.processes import ROOT, daphne_start, process_env, process_stop

CSRF = "faultsfaultsfaultsfaultsfaults42"  # any 32 letters or digits; cookie and header agree

SETUP = """
import json
import django
django.setup()
from io import StringIO
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from moderation_portal.core.access import MODERATOR
from reviews.policies.bootstrap import defaults_ensure
call_command("migrate", verbosity=0)
defaults_ensure()
out = StringIO()
call_command("create_service_token", "detection-tier", stdout=out)
sessions = {}
for name in ("mod-ana", "mod-ben", "mod-cy"):
    user = User.objects.create_user(username=name)
    user.groups.set(Group.objects.filter(name=MODERATOR))
    client = Client()
    client.force_login(user)
    sessions[name] = client.cookies["sessionid"].value
print(json.dumps({"token": out.getvalue().strip(), "sessions": sessions}))
"""


@dataclass
class Answer:
    status: int
    headers: dict
    body: object


@dataclass
class Portal:
    base: str
    token: str
    sessions: dict[str, str]
    pg: PostgresServer
    log: Path

    def call(
        self, method: str, path: str, *, body=None, token=None, session=None, raw=False
    ) -> Answer:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        if session:
            headers["Cookie"] = f"sessionid={session}; csrftoken={CSRF}"
            headers["X-CSRFToken"] = CSRF
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text, status, got = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            text, status, got = exc.read(), exc.code, dict(exc.headers)
        if not raw:
            text = json.loads(text) if text else None
        return Answer(status, got, text)

    def until_served(self, call, *args, deadline: float = 30) -> Answer:
        """`call(*args)` again after each 503's Retry-After, as the portal asks clients to."""
        give_up = time.monotonic() + deadline
        while (answer := call(*args)).status == 503 and time.monotonic() < give_up:
            time.sleep(int(answer.headers["Retry-After"]))
        return answer

    def ingest(self, events: list[dict]) -> Answer:
        return self.call("POST", "/api/v1/detections/", body=events, token=self.token)

    def decide(self, who: str, case_id: int) -> Answer:
        return self.call(
            "POST",
            f"/api/v1/cases/{case_id}/decision/",
            body={"verdict": "violation", "policy": "firearms", "action": "remove", "notes": ""},
            session=self.sessions[who],
        )

    def claim(self, who: str) -> Answer:
        return self.call("POST", "/api/v1/cases/claim-next/", body={}, session=self.sessions[who])

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(self.pg.conninfo("portal")) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pg-restart")
    pg, redis = PostgresServer(), RedisServer()
    daphne = setup = None
    try:
        pg.start()
        redis.start()
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE portal")
        env = process_env(
            DATABASE_URL=pg.url("portal"),
            REDIS_URL=redis.url(),
            MEDIA_ROOT=str(tmp / "media"),
            CELERY_EAGER="false",
            DB_POOL_MAX_SIZE="4",
            DB_POOL_TIMEOUT_SECONDS="1",
            DB_UNAVAILABLE_RETRY_AFTER_SECONDS="1",
        )
        # Daphne starts while the database is migrated; it is used once both are done.
        setup = subprocess.Popen(
            [sys.executable, "-c", SETUP],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = tmp / "daphne.log"
        daphne, base = daphne_start(env=env, log=log)
        out, err = setup.communicate(timeout=120)
        assert setup.returncode == 0, err[-3000:]
        made = json.loads(out.strip().splitlines()[-1])
        yield Portal(base, made["token"], made["sessions"], pg, log)
    finally:
        if setup is not None and setup.poll() is None:
            setup.kill()
        if daphne is not None:
            process_stop(daphne)
        redis.close()
        pg.close()


STOPPED = {"database_unavailable", "storage_unavailable"}


def assert_unavailable(answer: Answer, codes: set[str] = STOPPED) -> None:
    """The API's one error shape, as a 503 a client knows to retry. With the server stopped the
    pool cannot open connections, and the answer names the database."""
    assert answer.status == 503, answer
    assert int(answer.headers["Retry-After"]) > 0
    assert set(answer.body) == {"error"}
    assert set(answer.body["error"]) <= {"code", "message", "details"}
    assert answer.body["error"]["code"] in codes
    assert answer.body["error"]["message"]


def human_cases(n: int) -> list[dict]:
    return [f.event(score=0.6, seller=f"seller-pg-{i % 3}") for i in range(n)]


def test_requests_answer_503_while_postgres_is_down_and_work_resumes(portal):
    first = human_cases(4)
    assert portal.ingest(first).body["accepted"] == 4
    held = portal.claim("mod-ana")
    assert held.status == 200, held

    portal.pg.stop("fast")
    try:
        unsent = human_cases(3)
        assert_unavailable(portal.ingest(unsent))
        assert_unavailable(portal.claim("mod-ben"))
        assert_unavailable(
            portal.call(
                "GET", f"/api/v1/cases/{held.body['id']}/", session=portal.sessions["mod-ana"]
            )
        )
        page = portal.call("GET", "/queues/", session=portal.sessions["mod-ana"], raw=True)
        assert page.status == 503, page
        assert int(page.headers["Retry-After"]) > 0
        ready = portal.call("GET", "/readyz")
        assert ready.status == 503
        assert ready.body["checks"]["database"]["ok"] is False
        assert portal.call("GET", "/healthz").status == 200
    finally:
        portal.pg.start()

    # The same Daphne process serves again (a client that honours Retry-After gets through);
    # what was refused left nothing behind, so the batch sent again is accepted, not a duplicate.
    again = portal.until_served(portal.ingest, unsent)
    assert again.status == 200, again
    assert again.body["accepted"] == 3
    other = portal.until_served(portal.claim, "mod-ben")
    assert other.status == 200, other
    assert other.body["id"] != held.body["id"]
    decided = portal.decide("mod-ana", held.body["id"])
    assert decided.status == 201, decided
    ids = [e["event_id"] for e in first + unsent]
    assert portal.query(
        "SELECT count(*) FROM detection_detectionevent e JOIN reviews_case c "
        "ON c.detection_event_id = e.id WHERE e.event_id = ANY(%s)",
        (ids,),
    ) == [(7,)]


def attempt(call, *args) -> "Answer | OSError":
    try:
        return call(*args)
    except OSError as exc:  # the answer itself lost with the connection
        return exc


def ok(answer, status: int = 200) -> bool:
    return isinstance(answer, Answer) and answer.status == status


def test_a_crash_under_ingest_and_claims_leaves_nothing_half_written(portal):
    stop = threading.Event()
    batches: list[tuple[list[str], Answer | OSError]] = []
    claims: list[tuple[str, Answer | OSError]] = []
    decisions: list[tuple[int, Answer | OSError]] = []

    def tier() -> None:
        while not stop.is_set():
            events = human_cases(3)
            batches.append(([e["event_id"] for e in events], attempt(portal.ingest, events)))

    def moderator(who: str) -> None:
        while not stop.is_set():
            claimed = attempt(portal.claim, who)
            claims.append((who, claimed))
            if ok(claimed):
                case_id = claimed.body["id"]
                decisions.append((case_id, attempt(portal.decide, who, case_id)))

    portal.ingest(human_cases(6))
    threads = [threading.Thread(target=tier) for _ in range(2)]
    threads += [threading.Thread(target=moderator, args=(who,)) for who in ("mod-ben", "mod-cy")]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: sum(ok(a) for _, a in batches) >= 2)
        portal.pg.kill()  # every PostgreSQL process quits at once, as in a crash
        assert wait_until(lambda: sum(ok(a, 503) for _, a in batches + claims) >= 3)
        portal.pg.start()
        restarted_batches, restarted_decisions = len(batches), len(decisions)
        assert wait_until(
            lambda: (
                sum(ok(a) for _, a in batches[restarted_batches:]) >= 2
                and sum(ok(a, 201) for _, a in decisions[restarted_decisions:]) >= 1
            )
        ), portal.log.read_text()[-3000:]
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    answers = [a for _, a in batches + claims + decisions]
    # Every request got an answer: done, or a 503 to retry; never a 500, a hang or a reset.
    unexpected = [a for a in answers if not (isinstance(a, Answer) and a.status != 500)]
    assert not unexpected, unexpected
    for answer in answers:
        if answer.status == 503:
            # in a crash every pooled connection can be caught in flight: a busy pool is an
            # honest answer too
            assert_unavailable(answer, STOPPED | {"pool_exhausted"})
    stored = dict(
        portal.query(
            "SELECT e.event_id, count(c.id) FROM detection_detectionevent e "
            "LEFT JOIN reviews_case c ON c.detection_event_id = e.id GROUP BY e.event_id"
        )
    )
    # Each event has exactly one case; each batch is whole or absent; an accepted one is kept.
    assert set(stored.values()) == {1}
    for ids, answer in batches:
        present = [i in stored for i in ids]
        assert all(present) or not any(present), (ids, answer)
        if answer.status == 200:
            assert all(present), (ids, answer)
    # No case went to two moderators; a decision answered 201 is kept, one per case.
    holders: dict[int, set[str]] = {}
    for who, answer in claims:
        if answer.status == 200:
            holders.setdefault(answer.body["id"], set()).add(who)
    assert all(len(h) == 1 for h in holders.values()), holders
    decided = [case_id for case_id, answer in decisions if answer.status == 201]
    human = dict(
        portal.query(
            "SELECT case_id, count(*) FROM reviews_decision WHERE source = 'human' "
            "AND case_id = ANY(%s) GROUP BY case_id",
            (decided,),
        )
    )
    assert human == dict.fromkeys(decided, 1)
    assert portal.query(
        "SELECT count(*) FROM reviews_case WHERE (state = 'claimed' AND (claimed_by_id IS NULL "
        "OR lease_expires_at IS NULL)) OR (state = 'queued' AND claimed_by_id IS NOT NULL)"
    ) == [(0,)]
