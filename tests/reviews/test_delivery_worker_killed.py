"""A delivery worker killed in the middle of a batch: a real Celery worker process (prefork, its
own process group) runs `reviews.deliver_enforcements_task` from the broker against a slow
receiver on 127.0.0.1, and is killed with SIGKILL while a request is in flight. A second worker
finishes the batch once the dead worker's lease has run out.

The receiver verifies every request with the independent `standardwebhooks` package and records
each webhook-id and body as it arrives, before it answers.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

from moderation_portal.celery import app
from reviews.enforcement.delivery import deliver_enforcements_task
from reviews.models import Decision, DeliveryAttempt, OutboxMessage
from tests.processes import celery_worker_start, process_env, process_stop
from tests.reviews.helpers import open_cases, webhook_server, webhook_verified

SECRET = "whsec_" + base64.b64encode(bytes(range(80, 112))).decode()
ANSWER_AFTER_SECONDS = 0.2  # the receiver's pace: a batch of 42 takes several seconds
CONNECT_TIMEOUT, READ_TIMEOUT = 0.5, 2.0  # so a sending worker's lease is (0.5 + 2.0) * 2 = 5 s
# The worker dies while the receiver holds this request: every seller's first removal and the
# warning it carries have arrived (ids 1 to 24), then seller-k1's second removal; this is
# seller-k2's second removal, of six (seven messages with its warning).
KILL_AT_ARRIVAL = 26


@dataclass
class Arrival:
    webhook_id: str
    body: bytes
    verified: bool


@dataclass
class SlowReceiver:
    """Records every request as it arrives, then answers 204 after ANSWER_AFTER_SECONDS."""

    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    kill_now: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        verified = webhook_verified(SECRET, body, headers)
        with self.lock:
            self.arrivals.append(Arrival(headers["webhook-id"], body, verified))
            if len(self.arrivals) == KILL_AT_ARRIVAL:
                self.kill_now.set()
        time.sleep(ANSWER_AFTER_SECONDS)
        return (204 if verified else 401), {}

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


@pytest.fixture
def slow_receiver():
    state = SlowReceiver()
    with webhook_server("/hooks/enforcement", state.answer) as url:
        state.url = url
        yield state


@pytest.fixture
def delivery_workers(transactional_db, slow_receiver, tmp_path):
    """Starts real Celery workers (queue `default`, prefork, each in its own process group) on
    this test's database, configured for the slow receiver; stops any still running."""
    env = process_env(
        ENFORCEMENT_WEBHOOK_URL=slow_receiver.url,
        ENFORCEMENT_WEBHOOK_SECRET=SECRET,
        ENFORCEMENT_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT),
        ENFORCEMENT_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    )
    started: list[subprocess.Popen] = []
    app.control.purge()

    def start(name: str) -> subprocess.Popen:
        proc = celery_worker_start(
            name=name,
            queues="default",
            env=env,
            log=tmp_path / f"{name}.log",
            pool="prefork",
            own_group=True,  # the test kills the whole worker, its pool process too
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        process_stop(proc, group=True)
    app.control.purge()


def removals(sellers: list[tuple[str, int]]) -> list[OutboxMessage]:
    """One automatic removal per listing, the sellers' listings interleaved (round robin), so
    each seller's messages are spread over the outbox's id order. Returns every message of
    those decisions in id order: each seller's first removal also warns the seller (its
    warn_seller right after the remove_listing), later ones only remove."""
    remaining = dict(sellers)
    messages = []
    while any(remaining.values()):
        for seller, left in remaining.items():
            if not left:
                continue
            remaining[seller] = left - 1
            (case,) = open_cases(0.97, seller=seller)
            decision = Decision.objects.get(case=case)
            messages += OutboxMessage.objects.filter(enforcement__decision=decision).order_by("id")
    return messages


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_killed_delivery_worker_loses_nothing_and_keeps_each_seller_in_order(
    slow_receiver, delivery_workers
):
    """Every message reaches the marketplace under its one webhook-id, in order per seller,
    after the worker delivering them is killed mid-batch.

    Delivery is at-least-once with a stable id, and the marketplace dedupes on webhook-id
    (README, "The enforcement webhook"). The request in flight when the worker died reached the
    receiver, but the worker never recorded the answer, so the message was still `sending`
    under the dead worker's lease; once the lease ran out the next worker sent it again with the
    same webhook-id and the same bytes (the body is fixed at the first attempt), which the
    receiver recognises as a copy. That duplicate is acceptable; a message lost, one message
    under two ids (the receiver could not tell it is the same action), or a seller's actions
    out of order are not."""
    sellers = [("seller-k1", 7), ("seller-k2", 6), ("seller-k3", 5), ("seller-k4", 4)]
    sellers += [(f"seller-single-{i}", 1) for i in range(8)]
    messages = removals(sellers)
    actions = Counter(m.enforcement.action for m in messages)
    assert actions == {"remove_listing": 30, "warn_seller": len(sellers)}
    assert len(messages) == 42
    expected_ids = {m.webhook_id for m in messages}

    first = delivery_workers("killed")
    deliver_enforcements_task.apply_async()  # what beat sends every 5 s
    assert slow_receiver.kill_now.wait(60), f"{slow_receiver.count()} arrived before the kill"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    with slow_receiver.lock:
        before_kill = list(slow_receiver.arrivals)
    in_flight = before_kill[KILL_AT_ARRIVAL - 1].webhook_id
    assert len(before_kill) == KILL_AT_ARRIVAL < len(messages)
    states = Counter(OutboxMessage.objects.values_list("state", flat=True))
    assert states == {
        "delivered": KILL_AT_ARRIVAL - 1,
        "sending": 1,
        "pending": len(messages) - KILL_AT_ARRIVAL,
    }
    stuck = OutboxMessage.objects.select_related("seller").get(webhook_id=in_flight)
    assert (stuck.state, stuck.seller.external_id) == ("sending", "seller-k2")
    assert stuck.enforcement.action == "remove_listing"

    delivery_workers("second")
    deadline = time.monotonic() + 90
    while OutboxMessage.objects.exclude(state="delivered").exists():
        assert time.monotonic() < deadline, Counter(
            OutboxMessage.objects.values_list("state", flat=True)
        )
        deliver_enforcements_task.apply_async()
        time.sleep(1.0)

    with slow_receiver.lock:
        arrivals = list(slow_receiver.arrivals)
    assert all(a.verified for a in arrivals)
    seen = Counter(a.webhook_id for a in arrivals)
    # The receiver saw exactly the outbox's ids: none lost, none made up.
    assert set(seen) == expected_ids
    # One message, one id: each enforcement arrived under a single webhook-id.
    ids_per_enforcement: dict[int, set[str]] = defaultdict(set)
    for a in arrivals:
        ids_per_enforcement[json.loads(a.body)["data"]["enforcement_id"]].add(a.webhook_id)
    assert sorted(len(ids) for ids in ids_per_enforcement.values()) == [1] * len(messages)
    # The one copy is the request that was in flight when the worker died, byte for byte.
    assert {webhook_id for webhook_id, n in seen.items() if n > 1} == {in_flight}
    assert seen[in_flight] == 2
    copies = [a.body for a in arrivals if a.webhook_id == in_flight]
    assert copies[0] == copies[1]

    first_arrival: dict[str, int] = {}
    for position, a in enumerate(arrivals):
        first_arrival.setdefault(a.webhook_id, position)
    by_seller: dict[str, list[OutboxMessage]] = defaultdict(list)
    for message in OutboxMessage.objects.select_related("seller").order_by("id"):
        by_seller[message.seller.external_id].append(message)
    # Each seller's removals and the one warning of its first strike.
    assert sorted(len(v) for v in by_seller.values()) == sorted(n + 1 for _, n in sellers)
    for seller, seller_messages in by_seller.items():
        in_id_order = [m.webhook_id for m in seller_messages]
        assert sorted(in_id_order, key=first_arrival.__getitem__) == in_id_order, seller
    # The stuck message's seller waited for it: its later messages came after the copy that
    # was answered, never past the message the dead worker held.
    second_copy = max(i for i, a in enumerate(arrivals) if a.webhook_id == in_flight)
    later = [m.webhook_id for m in by_seller["seller-k2"] if m.id > stuck.id]
    assert len(later) == 4
    assert all(first_arrival[webhook_id] > second_copy for webhook_id in later)

    for message in OutboxMessage.objects.order_by("id"):
        assert (message.state, message.attempts, message.last_status, message.lease_until) == (
            "delivered",
            1,
            204,
            None,
        )
        assert (
            json.loads(next(a.body for a in arrivals if a.webhook_id == message.webhook_id))
            == message.body
        )
        # The killed attempt left no row: the worker died before it could record an answer.
        assert list(
            DeliveryAttempt.objects.filter(message=message).values_list(
                "number", "status_code", "outcome", "error"
            )
        ) == [(1, 204, "delivered", "")]
