"""Redis, the broker and channel layer, stopped and started again under a working portal.

Each test runs its own redis-server (tests/faults/servers.py); the portal's processes (a Celery
worker, Daphne) and the detection tier's publisher are real processes pointed at it.
"""

import json
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections
from django.test import Client

from detection.intake.simulator import DetectionTierSimulator
from detection.models import DeadLetter, DetectionEvent
from moderation_portal.core.access import MODERATOR
from reviews.models import Case
from tests import factories as f
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.faults.servers import RedisServer, wait_until
from tests.processes import (
    ROOT,
    celery_worker_start,
    daphne_start,
    process_env,
    process_stop,
)

pytestmark = pytest.mark.django_db(transaction=True)

SEED, COUNT, BATCH, RATE = 31, 20, 2, 4


def simulated_event_ids(count: int) -> list[str]:
    """The event ids `simulate_detection_tier --seed SEED --batch-size BATCH` publishes first,
    in order (the simulator is deterministic for a seed; a few are redeliveries)."""
    sim, ids = DetectionTierSimulator(seed=SEED), []
    while len(ids) < count:
        ids += [e["event_id"] for e in sim.batch(min(BATCH, count - len(ids)))]
    return ids


def publish(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "simulate_detection_tier",
            "--count",
            str(COUNT),
            "--seed",
            str(SEED),
            "--batch-size",
            str(BATCH),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored(event_ids) -> set[str]:
    return set(
        DetectionEvent.objects.filter(event_id__in=set(event_ids)).values_list(
            "event_id", flat=True
        )
    )


@pytest.fixture
def broker():
    """A broker that keeps what it acknowledged across a restart (append-only file, fsync on
    every write), as the portal's broker must be configured."""
    server = RedisServer(appendonly=True)
    server.start()
    yield server
    server.close()


def test_publishing_through_a_broker_restart_fails_loudly_and_loses_nothing(broker, tmp_path):
    env = process_env(REDIS_URL=broker.url())
    log = tmp_path / "worker.log"
    worker = celery_worker_start(name="ingest", queues="ingest", env=env, log=log)
    try:
        publisher = publish(env, "--rate", str(RATE))
        assert wait_until(lambda: DetectionEvent.objects.count() >= 2), log.read_text()[-3000:]
        broker.kill()  # as in a crash: only what Redis had written to its file survives
        out, err = publisher.communicate(timeout=60)
        # The tier is told, with how far it got: never a silent drop.
        assert publisher.returncode == 1, (out, err)
        published = int(
            re.search(rf"the broker is unavailable: published (\d+) of {COUNT} events", err)[1]
        )
        assert 2 <= published < COUNT

        broker.start()
        # Everything published before the outage is ingested, by the same worker, which
        # reconnected by itself.
        before = simulated_event_ids(published)
        assert wait_until(lambda: stored(before) == set(before)), log.read_text()[-3000:]

        # The tier sends everything again; what was already in comes back as duplicates.
        again = publish(env)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0, (out, err)
        assert f"published {COUNT} events" in out
        every = set(simulated_event_ids(COUNT))
        assert wait_until(lambda: stored(every) == every), log.read_text()[-3000:]
        assert worker.poll() is None
    finally:
        process_stop(worker)
    text = log.read_text()
    assert "Connection to broker lost" in text
    connected = re.findall(rf"Connected to redis://\S*127\.0\.0\.1:{broker.port}/0", text)
    assert len(connected) >= 2, text[-3000:]
    assert DetectionEvent.objects.count() == len(every)
    assert Case.objects.count() == len(every)
    assert DeadLetter.objects.count() == 0


QUEUES_GROUP_KEY = "portal:group:queues"  # channels-redis's set of the sockets on queue pages


def ingest_over_rest(base: str, token: str, event: dict) -> dict:
    request = urllib.request.Request(
        base + "/api/v1/detections/",
        data=json.dumps([event]).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def queue_page_sockets(layer: RedisServer) -> int:
    import redis

    try:
        return redis.Redis(port=layer.port, socket_timeout=1).zcard(QUEUES_GROUP_KEY)
    except redis.RedisError:
        return -1


@pytest.mark.browser
def test_a_queue_page_reconnects_and_catches_up_after_redis_restarts(
    tmp_path, service_token, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package")
    # Without persistence: the restarted Redis has forgotten every socket's group membership.
    layer = RedisServer()
    layer.start()
    try:
        daphne, base = daphne_start(
            env=process_env(REDIS_URL=layer.url(), CELERY_EAGER="false"),
            log=tmp_path / "daphne.log",
        )
    except BaseException:
        layer.close()
        raise
    # Playwright's sync API keeps an event loop in its thread; the ORM calls between browser
    # steps are ordinary blocking calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    watcher = User.objects.create_user(username="mod-watcher")
    watcher.groups.set(Group.objects.filter(name=MODERATOR))
    client = Client()
    client.force_login(watcher)
    session = client.cookies["sessionid"].value

    def case_of(event: dict) -> int:
        outcome = ingest_over_rest(base, service_token, event)
        assert outcome["accepted"] == 1, outcome
        return Case.objects.get(detection_event__event_id=event["event_id"]).id

    def browse() -> None:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
            )
            context = browser.new_context(base_url=base)
            context.set_default_timeout(20_000)
            context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
            page = context.new_page()
            page.goto("/queues/all/")
            page.evaluate("window.loadedOnce = true")  # gone if the page reloads
            assert wait_until(lambda: queue_page_sockets(layer) == 1)
            first = case_of(f.event(score=0.6))
            expect(page.locator(f'tr[data-case="{first}"]')).to_have_count(1, timeout=20_000)

            layer.stop()
            # Opened while Redis is down: ingest still answers, the page's hint is lost.
            missed = case_of(f.event(score=0.6))
            layer.start()
            # The page reconnects by itself and re-fetches what it missed, without a reload.
            expect(page.locator(f'tr[data-case="{missed}"]')).to_have_count(1, timeout=20_000)
            assert wait_until(lambda: queue_page_sockets(layer) == 1)
            after = case_of(f.event(score=0.6))
            expect(page.locator(f'tr[data-case="{after}"]')).to_have_count(1, timeout=20_000)
            assert page.evaluate("window.loadedOnce") is True
            # ORM calls made inside Playwright's context ran on their own connection.
            connections.close_all()
            browser.close()

    try:
        # in a thread of its own: a session-wide Playwright of the browser tests may hold an
        # event loop in this one, where the sync API refuses to start
        with ThreadPoolExecutor(1) as pool:
            pool.submit(browse).result()
    finally:
        process_stop(daphne)
        layer.close()
