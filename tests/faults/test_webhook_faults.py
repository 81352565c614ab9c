"""The marketplace's webhook receiver failing: answering 5xx, too slow to answer, and down for
longer than the retry schedule. The portal's real delivery (`deliveries_run`, what the periodic
task runs) sends to a receiver on a socket that verifies every request with the independent
`standardwebhooks` package (tests/reviews/helpers.py). While the receiver fails the backlog
grows in the outbox, attempts counted, nothing dropped; once it recovers the backlog drains in
the outbox's order (per listing and per seller) under each message's one webhook-id."""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command

from reviews.enforcement.delivery import deliveries_run
from reviews.models import Decision, DeliveryAttempt, OutboxMessage
from tests.processes import free_port
from tests.reviews.helpers import Receiver, open_cases, receiver_serving, webhook_server

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + base64.b64encode(bytes(range(120, 152))).decode()
PATH = "/hooks/enforcement"
SELLERS = ("seller-w1", "seller-w2", "seller-w3")


@pytest.fixture
def delivery(settings):
    """Short timeouts, and a retry schedule of immediate retries: each run is one more try."""
    settings.ENFORCEMENT_WEBHOOK_SECRET = SECRET
    settings.ENFORCEMENT_CONNECT_TIMEOUT_SECONDS = 0.3
    settings.ENFORCEMENT_READ_TIMEOUT_SECONDS = 0.3
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0,) * 10
    return settings


def backlog() -> list[OutboxMessage]:
    """Two automatic removals per seller, interleaved; each seller's first also warns it:
    nine messages, three per seller, in id order."""
    for _ in range(2):
        for seller in SELLERS:
            open_cases(0.97, seller=seller)
    messages = list(OutboxMessage.objects.select_related("seller").order_by("id"))
    assert Counter(m.seller.external_id for m in messages) == dict.fromkeys(SELLERS, 3)
    assert Decision.objects.count() == 6
    return messages


def heads(messages: list[OutboxMessage]) -> set[int]:
    """Each seller's first message: the only ones free to go while nothing is delivered."""
    first: dict[str, int] = {}
    for m in messages:
        first.setdefault(m.seller.external_id, m.pk)
    return set(first.values())


def drain(*, runs: int = 20) -> None:
    for _ in range(runs):
        if not OutboxMessage.objects.exclude(state="delivered").exists():
            return
        deliveries_run()
    pytest.fail(f"not delivered: {Counter(OutboxMessage.objects.values_list('state', flat=True))}")


def assert_caught_up_in_order(messages: list[OutboxMessage], delivered: list) -> None:
    """`delivered` (the requests the receiver acknowledged) hold every message once, verified,
    its body the stored one, each seller's messages in the outbox's order."""
    assert all(r.verified for r in delivered)
    ids = [r.headers["webhook-id"] for r in delivered]
    assert sorted(ids) == sorted(m.webhook_id for m in messages)  # each once, none lost
    position = {webhook_id: i for i, webhook_id in enumerate(ids)}
    by_seller = defaultdict(list)
    for m in messages:
        by_seller[m.seller.external_id].append(m.webhook_id)
    for seller, in_id_order in by_seller.items():
        assert sorted(in_id_order, key=position.__getitem__) == in_id_order, seller
    for m in OutboxMessage.objects.all():
        assert (m.state, m.lease_until) == ("delivered", None)
        assert (
            next(r for r in delivered if r.headers["webhook-id"] == m.webhook_id).data
            == (m.body["data"])
        )


def test_a_receiver_answering_5xx_builds_a_backlog_that_catches_up_in_order(delivery):
    messages = backlog()
    with receiver_serving(SECRET, PATH) as receiver:
        delivery.ENFORCEMENT_WEBHOOK_URL = receiver.url
        receiver.status = 503
        for _ in range(3):
            assert deliveries_run() == {"configured": True, "endpoint_enabled": True, "retrying": 3}
        failing = len(receiver.requests)
        # Only each seller's first message was tried, three times; the rest wait their turn.
        tried = Counter(r.headers["webhook-id"] for r in receiver.requests)
        assert tried == {m.webhook_id: 3 for m in messages if m.pk in heads(messages)}
        for m in OutboxMessage.objects.all():
            expected = ("retrying", 3, 503) if m.pk in heads(messages) else ("pending", 0, None)
            assert (m.state, m.attempts, m.last_status) == expected
        assert DeliveryAttempt.objects.filter(status_code=503, outcome="retry").count() == 9

        receiver.status = 204  # recovered
        drain()
    assert_caught_up_in_order(messages, receiver.requests[failing:])
    assert DeliveryAttempt.objects.filter(outcome="delivered").count() == len(messages)


def test_a_slow_receiver_builds_a_backlog_that_catches_up_in_order(delivery):
    """Answers slower than the read timeout count as failed attempts; the receiver got those
    requests all the same, so a message may arrive more than once, always under its one
    webhook-id with the same bytes (the receiver deduplicates on webhook-id)."""
    messages = backlog()
    receiver = Receiver(SECRET)
    slow = threading.Event()
    slow.set()

    def answer(headers, body):
        reply = receiver.answer(headers, body)
        if slow.is_set():
            time.sleep(1.0)  # past the sender's read timeout
        return reply

    with webhook_server(PATH, answer) as url:
        delivery.ENFORCEMENT_WEBHOOK_URL = url
        for _ in range(2):
            deliveries_run()
        slowly = len(receiver.requests)
        assert slowly == 6  # each seller's first message, twice
        assert Counter(OutboxMessage.objects.values_list("state", flat=True)) == {
            "retrying": 3,
            "pending": 6,
        }
        assert all(
            "timed out" in a.error.lower() or "timeout" in a.error.lower()
            for a in DeliveryAttempt.objects.all()
        )
        slow.clear()  # recovered
        drain()
    requests = list(receiver.requests)
    bodies = defaultdict(set)
    for r in requests:
        bodies[r.headers["webhook-id"]].add(r.body)
    assert sorted(len(b) for b in bodies.values()) == [1] * len(messages)
    first_seen: dict[str, object] = {}
    for r in requests:
        first_seen.setdefault(r.headers["webhook-id"], r)
    assert_caught_up_in_order(messages, list(first_seen.values()))
    # the two slow copies of each seller's first message, then one answered copy of each
    assert Counter(r.headers["webhook-id"] for r in requests) == {
        m.webhook_id: 3 if m.pk in heads(messages) else 1 for m in messages
    }
    for m in OutboxMessage.objects.all():
        assert m.attempts == (3 if m.pk in heads(messages) else 1)


@contextmanager
def listening(port: int, receiver: Receiver) -> Iterator[None]:
    """`receiver` answering on `port` of 127.0.0.1 while the block runs."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, _ = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_receiver_down_past_the_schedule_loses_nothing_and_catches_up_in_order(delivery):
    """Past the last retry a message is marked failed, kept, and holds back its seller's later
    messages; sent again once the receiver is back (`manage.py redeliver_enforcements
    --failed`), the backlog drains in order."""
    port = free_port()  # nothing listens there
    delivery.ENFORCEMENT_WEBHOOK_URL = f"http://127.0.0.1:{port}{PATH}"
    delivery.ENFORCEMENT_RETRY_SCHEDULE = (0, 0, 0, 0)
    messages = backlog()
    for _ in range(6):
        deliveries_run()
    for m in OutboxMessage.objects.all():
        if m.pk in heads(messages):
            assert (m.state, m.attempts, m.last_status) == ("failed", 4, None)
            assert m.last_error
        else:
            assert (m.state, m.attempts) == ("pending", 0)
    assert DeliveryAttempt.objects.filter(status_code=None).count() == 12
    assert OutboxMessage.objects.count() == len(messages)  # nothing dropped

    receiver = Receiver(SECRET)
    with listening(port, receiver):
        call_command("redeliver_enforcements", "--failed")
        drain()
    assert_caught_up_in_order(messages, receiver.requests)
    assert len(receiver.requests) == len(messages)
