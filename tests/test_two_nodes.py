"""Two nodes on one PostgreSQL and one Redis, the production shape (ops/Procfile, ops/systemd/):
each node runs a web process (Daphne) and a Celery worker consuming every queue the portal
routes tasks to, so each queue has two workers. Everything between the nodes goes through the
shared database and Redis (broker and channel layer); the test talks to them as moderators and
the detection tier would, over HTTP and websockets.

The processes start once for the module; each test has its own users and cases (transactional
tests flush the database between them).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import global_settings, settings
from django.contrib.auth.models import Group, User
from django.test import Client

from moderation_portal.celery import app
from moderation_portal.core.access import MODERATOR
from moderation_portal.core.models import AuditEvent
from reviews.cases.intake import ingest_events_task
from reviews.models import Case, Decision
from tests import factories as f
from tests.processes import (
    celery_worker_start,
    complete_lines,
    daphne_start,
    process_env,
    process_stop,
)
from tests.reviews.helpers import open_cases

PASSWORD = "two nodes correct horse"
WAIT = 60  # seconds: the most any one expected event may take on a loaded machine
# "Task detection.ingest_events[<task id>] succeeded in 0.05s: ..."
INGEST_DONE = re.compile(r"Task detection\.ingest_events\[([0-9a-f-]{36})\] succeeded")


def _run_in_thread(coroutine_function):
    """asyncio.run in a thread of its own: a session-wide Playwright of the browser tests may
    hold an event loop in the test's thread, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_function())).result()


def portal_queues() -> list[str]:
    """Every queue a task of the portal is sent to: the default one and each route's."""
    routes = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE} | routes)


@dataclass
class Node:
    name: str
    base: str  # the web process's URL
    web: subprocess.Popen
    worker: subprocess.Popen
    worker_log: Path

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://", 1)


@pytest.fixture(scope="module")
def nodes(django_db_setup, django_db_blocker, tmp_path_factory):
    """Nodes A and B: a Daphne process and a Celery worker each, on this run's test database,
    one shared media root, and the test's Redis. Yields (a, b)."""
    root = tmp_path_factory.mktemp("two-nodes")
    with django_db_blocker.unblock():
        env = process_env(
            MEDIA_ROOT=str(root / "media"),
            SECURE_COOKIES="false",
            # No image model: enrichment says so instead of loading one.
            DETECTION_MODEL_CONFIG=str(root / "no-model.json"),
        )
    app.control.purge()
    queues = ",".join(portal_queues())
    started: list[subprocess.Popen] = []

    def web(name: str):
        proc, base = daphne_start(env=env, log=root / f"web-{name}.log", timeout=120)
        started.append(proc)
        return proc, base

    def worker(name: str):
        log = root / f"worker-{name}.log"
        proc = celery_worker_start(
            name=f"node-{name}", queues=queues, env=env, log=log, timeout=120
        )
        started.append(proc)
        return proc, log

    try:
        with ThreadPoolExecutor(4) as pool:
            webs = {n: pool.submit(web, n) for n in "ab"}
            workers = {n: pool.submit(worker, n) for n in "ab"}
            built = [
                Node(n, webs[n].result()[1], webs[n].result()[0], *workers[n].result())
                for n in "ab"
            ]
        yield tuple(built)
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(process_stop, started))
        app.control.purge()


def moderators(n: int, prefix: str) -> list[User]:
    group = Group.objects.get(name=MODERATOR)
    users = []
    for i in range(n):
        user = User.objects.create_user(f"{prefix}-{i}", password=PASSWORD)
        user.groups.add(group)
        users.append(user)
    return users


def session_cookie(user: User) -> str:
    """A session for `user` made directly (Django's force_login: the same session row a login
    makes, without the password hash's deliberate cost)."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def person_session(node: Node, *, sessionid: str = "", login: tuple[str, str] = ("", "")):
    """An aiohttp session holding the CSRF cookie `node` set, and either the session `sessionid`
    or the one node's login form gives for `login` (username, password)."""
    import aiohttp

    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with session.get(f"{node.base}/login/") as r:
            assert r.status == 200
            page = await r.text()
        if sessionid:
            session.cookie_jar.update_cookies({"sessionid": sessionid})
        else:
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            form = {"username": login[0], "password": login[1], "csrfmiddlewaretoken": token}
            async with session.post(f"{node.base}/login/", data=form, allow_redirects=False) as r:
                assert r.status == 302, await r.text()
    except BaseException:
        await session.close()
        raise
    return session


def csrf(session) -> dict[str, str]:
    token = next(c.value for c in session.cookie_jar if c.key == "csrftoken")
    return {"X-CSRFToken": token}


async def post(session, url: str, body: dict | None = None) -> tuple[int, dict | None]:
    async with session.post(url, json=body or {}, headers=csrf(session)) as r:
        return r.status, (await r.json() if r.status not in (204,) else None)


async def next_json(ws, *, wanted) -> dict:
    """The first message on `ws` that `wanted` accepts (others, such as enrichment news, are
    passed over), within WAIT seconds."""

    async def read() -> dict:
        while True:
            message = await ws.receive_json()
            if wanted(message):
                return message

    return await asyncio.wait_for(read(), WAIT)


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_decision_on_node_a_updates_the_pages_open_on_node_b(nodes, settings):
    a, b = nodes
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS  # what the web processes check
    (watcher,) = moderators(1, "watcher")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    (decider,) = moderators(1, "decider")
    decider_session = session_cookie(decider)
    (case,) = open_cases(0.6)
    assert case.state == Case.State.QUEUED

    async def scenario() -> tuple[dict, dict, dict, dict, dict]:
        # The watcher signs in on node A and opens the queue page and the case page on node B:
        # one session, valid on either node.
        watching = await person_session(a, login=(watcher.username, PASSWORD))
        deciding = await person_session(a, sessionid=decider_session)
        try:
            origin = {"Origin": b.base}
            queues = await watching.ws_connect(f"{b.ws}/ws/queues/", headers=origin)
            case_page = await watching.ws_connect(f"{b.ws}/ws/cases/{case.id}/", headers=origin)
            status, claimed = await post(deciding, f"{b.base}/api/v1/cases/claim-next/")
            assert (status, claimed["id"]) == (200, case.id)
            claimed_news = await next_json(case_page, wanted=lambda m: m["changed"] == "claimed")
            claim_on_queues = await next_json(queues, wanted=lambda m: True)
            status, decision = await post(
                deciding,
                f"{a.base}/api/v1/cases/{case.id}/decision/",
                {"verdict": "no_violation", "action": "none", "notes": "toy"},
            )
            assert status == 201, decision
            decided_news = await next_json(case_page, wanted=lambda m: m["changed"] == "decided")
            queue_news = await next_json(queues, wanted=lambda m: True)
            # what the page then fetches from its own node: node A's write
            async with watching.get(f"{b.base}/api/v1/cases/{case.id}/") as r:
                assert r.status == 200
                seen_on_b = await r.json()
            await queues.close()
            await case_page.close()
            return claim_on_queues, claimed_news, decided_news, queue_news, seen_on_b
        finally:
            await watching.close()
            await deciding.close()

    claim_on_queues, claimed_news, decided_news, queue_news, seen_on_b = _run_in_thread(scenario)
    assert claimed_news == {"changed": "claimed"}
    assert claim_on_queues == {"changed": "queues"}  # the claim, through node B, reached it too
    assert decided_news == {"changed": "decided"}
    assert queue_news == {"changed": "queues"}
    assert seen_on_b["state"] == "decided"
    assert [(d["verdict"], d["decided_by"]) for d in seen_on_b["decisions"]] == [
        ("no_violation", decider.username)
    ]


CASES = 30
CLAIMERS = 10


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_claims_over_both_nodes_never_hand_a_case_out_twice(nodes):
    """Ten moderators at once, each claiming through one node and deciding through the other
    (half start on A, half on B), until both nodes answer that nothing is left."""
    a, b = nodes
    cases = open_cases(*[0.55 + i / 1000 for i in range(CASES)])
    assert {c.state for c in cases} == {Case.State.QUEUED}
    people = moderators(CLAIMERS, "claimer")

    sessions = {user.pk: session_cookie(user) for user in people}

    async def work(user: User, first: Node, second: Node) -> list[tuple[str, int]]:
        session = await person_session(first, sessionid=sessions[user.pk])
        taken = []
        try:
            while True:
                status, case = await post(session, f"{first.base}/api/v1/cases/claim-next/")
                if status == 204:
                    # nothing left: the other node agrees
                    status, _ = await post(session, f"{second.base}/api/v1/cases/claim-next/")
                    assert status == 204
                    return taken
                assert status == 200, case
                assert case["claim"]["claimed_by"] == user.username
                taken.append((first.name, case["id"]))
                status, decision = await post(
                    session,
                    f"{second.base}/api/v1/cases/{case['id']}/decision/",
                    {"verdict": "no_violation", "action": "none", "notes": "cleared"},
                )
                assert status == 201, decision
                first, second = second, first
        finally:
            await session.close()

    async def everyone():
        return await asyncio.gather(
            *(work(user, *((a, b) if i % 2 == 0 else (b, a))) for i, user in enumerate(people))
        )

    results = _run_in_thread(everyone)
    claimed = [case_id for taken in results for _, case_id in taken]
    # every case handed out once, to one person, and nothing left behind
    assert sorted(claimed) == sorted(c.id for c in cases)
    assert Counter(
        AuditEvent.objects.filter(action="case_claimed").values_list("object_id", flat=True)
    ) == Counter(str(c.id) for c in cases)
    holder = {
        case_id: user.username
        for user, taken in zip(people, results, strict=True)
        for _, case_id in taken
    }
    decisions = list(Decision.objects.values_list("case_id", "decided_by__username", "source"))
    assert sorted(decisions) == sorted((pk, name, "human") for pk, name in holder.items())
    assert set(Case.objects.values_list("state", flat=True)) == {Case.State.DECIDED}
    # both nodes handed out cases
    assert {node for taken in results for node, _ in taken} == {"a", "b"}


BATCH = 2
MAX_TASKS = 200


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_either_node_takes_work_from_the_shared_queues(nodes):
    """The detection tier publishes ingest tasks to the broker (as `simulate_detection_tier`
    does); each is run once, by whichever node's worker is free, and both nodes take some."""
    a, b = nodes
    published: dict[str, list[dict]] = {}

    def done() -> dict[str, set[str]]:
        """The published tasks each node's worker has logged as finished."""
        ran = {}
        for node in nodes:
            found = (INGEST_DONE.search(line) for line in complete_lines(node.worker_log))
            ran[node.name] = {m.group(1) for m in found if m} & set(published)
        return ran

    def all_done() -> bool:
        return sum(map(len, done().values())) == len(published)

    # Publish in rounds until each worker has run some (almost always within the first round);
    # the cap keeps a broken node from making this run forever.
    while len(published) < MAX_TASKS:
        for _ in range(10):
            batch = [f.event(score=0.55, images=[]) for _ in range(BATCH)]
            published[ingest_events_task.apply_async(args=[batch], queue="ingest").id] = batch
        assert _wait_for(all_done), {name: len(ids) for name, ids in done().items()}
        if all(done().values()):
            break
    ran = done()
    assert all(ran.values()), {name: len(ids) for name, ids in ran.items()}
    # each task ran on exactly one node, and every one ran
    assert ran["a"].isdisjoint(ran["b"])
    assert ran["a"] | ran["b"] == set(published)
    events = [ev["event_id"] for batch in published.values() for ev in batch]
    assert sorted(Case.objects.values_list("detection_event__event_id", flat=True)) == sorted(
        events
    )
    for node in (a, b):
        assert node.worker.poll() is None


def _wait_for(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
