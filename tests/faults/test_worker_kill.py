"""A Celery worker killed with SIGKILL (its main process and its prefork pool at once) in the
middle of ingest, enrichment, LLM verification and enforcement delivery, then a fresh worker.

Each test makes the work wait on something outside the worker (a row lock held by the test, an
image host that does not answer yet, an LLM endpoint that does not answer yet, a webhook
receiver that does not answer yet), waits until the database shows the work under way, and
kills the worker there. Tasks are acknowledged late, so the killed worker's task stays with the
broker and goes back to its queue once the visibility timeout (a few seconds here) has passed;
what the portal stored is checked against what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import Counter, defaultdict

import psycopg
import pytest
from django.db import connection

from detection.models import (
    DeadLetter,
    DetectionEvent,
    EnrichmentStep,
    Listing,
    ListingImage,
    Seller,
)
from llm_verify.models import LlmVerdict
from moderation_portal.core.audit import AuditAction
from moderation_portal.core.models import AuditEvent
from reviews.cases.intake import detections_ingest, ingest_events_task
from reviews.enforcement.delivery import deliver_enforcements_task
from reviews.models import Case, Decision, DeliveryAttempt, OutboxMessage
from tests import factories as f
from tests.detection.test_image_fetch import _self_signed
from tests.faults.conftest import other_backends, wait_until
from tests.llm_verify.conftest import FakeLLMServer, Reply
from tests.reviews.helpers import Receiver, open_cases, webhook_server
from tests.reviews.test_llm_routing import DESCRIPTION, TITLE, verdict

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

INGEST_LINE = re.compile(
    r"ingest batch of (\d+): \{'accepted': (\d+), 'duplicate': (\d+), 'rejected': (\d+)\}"
)


def malformed() -> dict:
    return f.mutate(f.event(), "detection.scores", {"guns": 0.9})


def test_a_worker_killed_mid_batch_loses_no_event_and_leaves_no_half_batch(workers):
    """Every event sent is accounted for once (accepted + duplicates + dead letters = sent),
    and the batch whose transaction the kill cut short left nothing behind."""
    # A listing that exists already: the second batch's transaction waits for its row lock.
    held = f.event(listing="listing-held", seller="seller-held")
    assert [o.status for o in detections_ingest(events=[held], source="api")] == ["accepted"]
    first_new = [f.event(seller="seller-b1") for _ in range(20)]
    second_new = [f.event(seller="seller-b2") for _ in range(19)]
    second_new.append(f.event(listing="listing-held", seller="seller-held"))
    third_new = [f.event(seller="seller-b3") for _ in range(20)]
    batches = [
        [*first_new, malformed(), malformed()],
        [*second_new, *first_new[:3], malformed(), malformed()],
        [*third_new, *second_new[:2], malformed()],
    ]
    sent = sum(len(b) for b in batches)
    unique = {e["event_id"] for e in first_new + second_new + third_new}
    rejected_ids = {
        e["event_id"] for b in batches for e in b if e["detection"]["scores"].get("guns")
    }
    duplicates = sent - len(unique) - len(rejected_ids)
    assert (sent, len(unique), len(rejected_ids), duplicates) == (70, 60, 5, 5)

    db = connection.settings_dict
    locker = psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=False,
    )
    try:
        locker.execute(
            f"SELECT id FROM {Listing._meta.db_table} WHERE external_id = %s FOR UPDATE",
            ["listing-held"],
        )
        first = workers.start("ingest-killed", queues="ingest")
        for batch in batches:
            ingest_events_task.apply_async(args=[batch])
        wait_until(
            lambda: (
                DetectionEvent.objects.filter(
                    event_id__in=[e["event_id"] for e in first_new]
                ).count()
                == len(first_new)
                and other_backends("wait_event_type = 'Lock'")
            ),
            timeout=60,
            what="the first batch stored and the second waiting on the listing's row lock",
        )
        (waiting,) = other_backends("wait_event_type = 'Lock'")
        workers.kill(first)
    finally:
        locker.rollback()
        locker.close()
    # The dead worker's session ends once PostgreSQL finds its client gone; its transaction is
    # rolled back, never committed.
    wait_until(lambda: waiting not in other_backends(), timeout=30, what="the session ending")
    assert set(DetectionEvent.objects.values_list("event_id", flat=True)) == {
        held["event_id"],
        *(e["event_id"] for e in first_new),
    }
    assert not Seller.objects.filter(external_id="seller-b2").exists()
    assert DeadLetter.objects.count() == 2

    workers.start("ingest-fresh", queues="ingest")
    wait_until(
        lambda: len(INGEST_LINE.findall(workers.log_text())) >= len(batches),
        timeout=120,  # the killed attempt comes back after the visibility timeout
        what="every batch ingested",
    )
    outcomes = [tuple(map(int, m)) for m in INGEST_LINE.findall(workers.log_text())]
    # Each batch was ingested to the end exactly once: the killed attempt recorded nothing.
    assert sorted(o[0] for o in outcomes) == sorted(len(b) for b in batches)
    accepted, duplicate, rejected = (sum(o[i] for o in outcomes) for i in (1, 2, 3))
    assert (accepted, duplicate, rejected) == (len(unique), duplicates, len(rejected_ids))
    assert accepted + duplicate + rejected == sent
    stored = set(DetectionEvent.objects.values_list("event_id", flat=True))
    assert stored == unique | {held["event_id"]}
    assert Case.objects.count() == len(stored)
    assert Case.objects.filter(detection_event__event_id__in=unique).count() == len(unique)
    assert set(DeadLetter.objects.values_list("event_id", flat=True)) == rejected_ids
    assert DeadLetter.objects.count() == len(rejected_ids)


class ImageHost:
    """An HTTPS image host on 127.0.0.1 (certificate for `localhost`): `/held.png` holds its
    first request until released, then serves the photo; `/down.png` answers 503."""

    def __init__(self, tmp_path) -> None:
        import http.server
        import ssl

        self.photo = f.png_bytes((10, 200, 30), size=(80, 60))
        self.arrived, self.release = threading.Event(), threading.Event()
        self.paths: list[str] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host.paths.append(self.path)
                if self.path == "/held.png" and not host.arrived.is_set():
                    host.arrived.set()
                    host.release.wait(30)
                status, body = (
                    (200, host.photo) if self.path == "/held.png" else (503, b"unavailable")
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the fetching worker is gone

            def log_message(self, *args):
                pass

        self.cert, key = _self_signed(tmp_path)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://localhost:{self.server.server_address[1]}{path}"

    def image(self, path: str) -> dict:
        return {
            "id": "img-1",
            "url": self.url(path),
            "sha256": hashlib.sha256(self.photo).hexdigest(),
        }

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def image_host(tmp_path, settings):
    host = ImageHost(tmp_path)
    settings.IMAGE_HOST_ALLOWLIST = ["localhost"]
    yield host
    host.stop()


def test_a_worker_killed_mid_enrichment_leaves_no_step_running(workers, image_host, tmp_path):
    """Every enrichment step ends finished or marked failed: the step the kill interrupted
    (left `running` by the dead worker) runs again to the end, and one whose image host stays
    down is given up after its retries."""
    slow = f.event(images=[image_host.image("/held.png")], seller="seller-slow")
    down = f.event(images=[image_host.image("/down.png")], seller="seller-down")
    env = {
        "IMAGE_HOST_ALLOWLIST": "localhost",
        "IMAGE_FETCH_CA_FILE": str(image_host.cert),
        "DETECTION_MODEL_CONFIG": str(tmp_path / "no-model.json"),  # heatmaps: not available
        "ENRICH_MAX_RETRIES": "1",
    }
    first = workers.start("enrich-killed", queues="enrich", **env)
    outcomes = detections_ingest(events=[slow, down], source="api")  # enqueues enrichment
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    slow_event = DetectionEvent.objects.get(event_id=slow["event_id"])
    down_event = DetectionEvent.objects.get(event_id=down["event_id"])
    wait_until(
        lambda: (
            image_host.arrived.is_set()
            and EnrichmentStep.objects.filter(
                event=slow_event, name="hashes", state="running"
            ).exists()
        ),
        timeout=60,
        what="the hash step fetching the held image",
    )
    workers.kill(first)
    image_host.release.set()
    assert EnrichmentStep.objects.get(event=slow_event, name="hashes").state == "running"

    workers.start("enrich-fresh", queues="enrich", **env)
    wait_until(
        lambda: (
            not EnrichmentStep.objects.exclude(state__in=["done", "failed", "skipped"])
            .filter(event__in=[slow_event, down_event])
            .exists()
            and EnrichmentStep.objects.filter(event__in=[slow_event, down_event]).count() == 6
        ),
        timeout=60,
        what="every step finished",
    )
    steps = {
        (s.event_id, s.name): (s.state, s.attempts)
        for s in EnrichmentStep.objects.filter(event__in=[slow_event, down_event])
    }
    assert steps == {
        (slow_event.id, "heatmaps"): ("skipped", 1),
        (slow_event.id, "neighbours"): ("skipped", 1),
        # killed mid-way, then run again to the end by the fresh worker
        (slow_event.id, "hashes"): ("done", 2),
        (down_event.id, "heatmaps"): ("skipped", 1),
        (down_event.id, "neighbours"): ("skipped", 1),
        (down_event.id, "hashes"): ("failed", 2),
    }
    failed = EnrichmentStep.objects.get(event=down_event, name="hashes")
    assert failed.detail == "image fetch: HTTP 503 (gave up after retries)"
    assert ListingImage.objects.get(listing__external_id=slow["listing"]["id"]).state == "stored"
    assert image_host.paths.count("/held.png") == 2  # the killed fetch and the one that stored it
    assert set(Case.objects.values_list("state", flat=True)) == {"queued"}


def test_a_killed_pool_process_has_its_step_run_again_by_its_worker(workers, image_host, tmp_path):
    """Only the pool process dies (the worker's main process lives): the main process sees it
    lost and puts the task back at once (CELERY_TASK_REJECT_ON_WORKER_LOST), and its next pool
    process runs the step to the end; the visibility timeout is an hour here, so it is not what
    brought the task back."""
    slow = f.event(images=[image_host.image("/held.png")], seller="seller-slow")
    env = {
        "IMAGE_HOST_ALLOWLIST": "localhost",
        "IMAGE_FETCH_CA_FILE": str(image_host.cert),
        "DETECTION_MODEL_CONFIG": str(tmp_path / "no-model.json"),
        "CELERY_VISIBILITY_TIMEOUT": "3600",
    }
    worker = workers.start("enrich-pool-killed", queues="enrich", **env)
    assert [o.status for o in detections_ingest(events=[slow], source="api")] == ["accepted"]
    event = DetectionEvent.objects.get(event_id=slow["event_id"])
    hashes = EnrichmentStep.objects.filter(event=event, name="hashes")
    wait_until(
        lambda: image_host.arrived.is_set() and hashes.filter(state="running").exists(),
        timeout=60,
        what="the hash step fetching the held image",
    )
    pool_process = workers.kill_pool_process(worker)
    image_host.release.set()
    wait_until(lambda: hashes.filter(state="done").exists(), timeout=60, what="the step run again")
    assert worker.poll() is None  # the same worker, never restarted
    assert hashes.get().attempts == 2
    assert f"pid:{pool_process} exited with 'signal 9 (SIGKILL)'" in workers.log_text()
    assert image_host.paths.count("/held.png") == 2


def test_a_worker_killed_mid_verification_reaches_one_verdict_and_one_decision(workers, settings):
    """The case whose LLM verification the kill interrupted (left `running` by the dead worker)
    is verified again once that run is stale, and ends with one verdict and one decision."""
    server = FakeLLMServer()
    server.start()
    try:
        held = Reply.content(verdict())
        held.delay_s = 60  # the endpoint has not answered when the worker dies
        server.script(held, Reply.content(verdict()))
        settings.LLM_BASE_URL, settings.LLM_MODEL = server.base_url, "fake-model"
        settings.LLM_WAIT_FOR_ENRICHMENT_SECONDS = 0
        env = {
            "LLM_BASE_URL": server.base_url,
            "LLM_MODEL": "fake-model",
            "LLM_READ_TIMEOUT_SECONDS": "3",
            "LLM_DEADLINE_SECONDS": "4",  # a running verification is stale after 2 × 4 s
            "LLM_BREAKER_FAILURES": "50",
        }
        first = workers.start("llm-killed", queues="llm", **env)
        (case,) = open_cases(0.8, title=TITLE, description=DESCRIPTION)  # enqueues verification
        assert (case.route, case.llm_state) == ("llm_verify", "pending")
        wait_until(
            lambda: (
                server.request_count == 1
                and Case.objects.filter(id=case.id, llm_state="running").exists()
            ),
            timeout=60,
            what="the verification asking the LLM",
        )
        workers.kill(first)
        assert not LlmVerdict.objects.exists()

        workers.start("llm-fresh", queues="llm", **env)
        wait_until(
            lambda: Case.objects.filter(id=case.id, llm_state="done").exists(),
            timeout=60,
            what="the verification finished",
        )
        case.refresh_from_db()
        assert server.request_count == 2  # the question the dead worker asked, asked once more
        (row,) = LlmVerdict.objects.filter(event=case.detection_event)
        assert (case.llm_verdict_id, row.status, case.state) == (row.id, "ok", "closed")
        (decision,) = Decision.objects.filter(case=case)
        assert (decision.source, decision.llm_verdict_id) == ("llm_verified", row.id)
        recorded = AuditEvent.objects.filter(
            action=AuditAction.LLM_VERDICT_RECORDED, object_id=str(case.id)
        )
        assert [e.data["verdict_id"] for e in recorded] == [row.id]
    finally:
        server.stop()


SECRET = "whsec_" + base64.b64encode(bytes(range(40, 72))).decode()
HOLD_AT_ARRIVAL = 4  # the receiver holds this request until the worker sending it is dead


def test_a_worker_killed_mid_delivery_delivers_each_enforcement_under_one_webhook_id(workers):
    """Every enforcement reaches the receiver under its one webhook-id (verified with the
    `standardwebhooks` package), in order per seller; the request in flight at the kill arrives
    once more, byte for byte, so a receiver deduplicating on webhook-id applies each once."""
    receiver = Receiver(SECRET)
    lock, held, release = threading.Lock(), threading.Event(), threading.Event()

    def answer(headers, body):
        with lock:
            reply = receiver.answer(headers, body)
            hold = len(receiver.requests) == HOLD_AT_ARRIVAL
        if hold:
            held.set()
            release.wait(30)
        return reply

    messages = []
    for seller in ("seller-d1", "seller-d2", "seller-d3"):
        for _ in range(2):
            (case,) = open_cases(0.97, seller=seller)
            messages += OutboxMessage.objects.filter(enforcement__decision__case=case)
    # each seller's first removal also warns the seller
    assert len(messages) == 9

    with webhook_server("/hooks/enforcement", answer) as url:
        env = {
            "ENFORCEMENT_WEBHOOK_URL": url,
            "ENFORCEMENT_WEBHOOK_SECRET": SECRET,
            "ENFORCEMENT_CONNECT_TIMEOUT_SECONDS": "0.5",
            "ENFORCEMENT_READ_TIMEOUT_SECONDS": "1.5",  # a sending worker's lease: 4 s
        }
        first = workers.start("delivery-killed", queues="default", **env)
        deliver_enforcements_task.apply_async()  # what beat sends every 5 s
        wait_until(held.is_set, timeout=60, what="the fourth delivery arriving")
        workers.kill(first)
        release.set()
        in_flight = receiver.requests[HOLD_AT_ARRIVAL - 1].headers["webhook-id"]
        assert OutboxMessage.objects.get(webhook_id=in_flight).state == "sending"

        workers.start("delivery-fresh", queues="default", **env)

        def all_delivered() -> bool:
            if not OutboxMessage.objects.exclude(state="delivered").exists():
                return True
            deliver_enforcements_task.apply_async()
            return False

        wait_until(all_delivered, timeout=60, what="every message delivered")

    requests = list(receiver.requests)
    assert all(r.verified for r in requests)
    seen = Counter(r.headers["webhook-id"] for r in requests)
    assert set(seen) == {m.webhook_id for m in messages}
    assert {webhook_id: n for webhook_id, n in seen.items() if n > 1} == {in_flight: 2}
    copies = {r.body for r in requests if r.headers["webhook-id"] == in_flight}
    assert len(copies) == 1
    ids_per_enforcement = defaultdict(set)
    for r in requests:
        ids_per_enforcement[r.data["enforcement_id"]].add(r.headers["webhook-id"])
    assert sorted(map(len, ids_per_enforcement.values())) == [1] * len(messages)
    first_arrival: dict[str, int] = {}
    for position, r in enumerate(requests):
        first_arrival.setdefault(r.headers["webhook-id"], position)
    by_seller = defaultdict(list)
    for message in OutboxMessage.objects.select_related("seller").order_by("id"):
        by_seller[message.seller.external_id].append(message.webhook_id)
        assert (message.state, message.attempts) == ("delivered", 1)
        assert (
            json.loads(
                next(r.body for r in requests if r.data["enforcement_id"] == message.enforcement_id)
            )
            == message.body
        )
    for seller, in_id_order in by_seller.items():
        assert sorted(in_id_order, key=first_arrival.__getitem__) == in_id_order, seller
    # the killed attempt left no attempt row: the worker died before it heard the answer
    assert DeliveryAttempt.objects.count() == len(messages)
