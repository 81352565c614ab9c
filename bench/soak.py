"""Soak: the whole portal under sustained, mixed load for a bounded time, on loopback only.

`make soak` (`python -m bench.soak`); not part of `make bench`. For SOAK_SECONDS (180):

- the detection tier publishes SOAK_RATE events a second (20), in batches, through the real
  Celery path (`detection.ingest_events` on the broker), with a share of malformed events and
  redeliveries as the simulator makes them;
- SOAK_MODERATORS (20) simulated moderators, each a thread with its own signed-in session and
  keep-alive HTTP connection, claim the next case and decide it over the API, spread over
  SOAK_WEB_PROCESSES (2) Daphne processes;
- the marketplace receives the enforcement webhooks (a Standard Webhooks receiver on
  127.0.0.1 that verifies each one) and files appeals over the API for a share of what it was
  sent (SOAK_APPEAL_SHARE, 0.3), sending some of them twice, as a retrying client would;
- Celery workers per queue and beat run as in production (ops/Procfile).

Then the load stops, everything in flight is drained (bounded by SOAK_DRAIN_SECONDS), and the
counts must reconcile: events sent = accepted + duplicates + dead letters; cases decided by
moderators = human decisions (each case once); outbox rows = messages delivered = webhook-ids
the receiver saw; appeals filed = appeals recorded; no case left claimed. It exits 1 when any
of them does not, or when any request was answered 5xx or failed. The report:
bench/results/soak.json (throughput and p50/p99 per operation) and bench/results/soak.md; a
copy of the JSON in var/bench/soak.json.

Models and the LLM are not configured (enrichment records that and moves on, cases the LLM would
verify go to people): the soak measures the portal's own paths, not model inference. Enrichment
runs behind ingest; what it has not done when the soak ends is reported, not waited for.
"""

import base64
import http.client
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench._db import reset_database, use_bench_database

ROOT = Path(__file__).resolve().parent.parent
DB = "moderation_portal_bench_soak"
SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
RATE = float(os.environ.get("SOAK_RATE", "20"))
BATCH = int(os.environ.get("SOAK_BATCH", "5"))
MODERATORS = int(os.environ.get("SOAK_MODERATORS", "20"))
WEB_PROCESSES = int(os.environ.get("SOAK_WEB_PROCESSES", "2"))
APPEAL_SHARE = float(os.environ.get("SOAK_APPEAL_SHARE", "0.3"))
RESEND_SHARE = 0.1  # of appeals, sent again with the same appeal_id
THINK_SECONDS = float(os.environ.get("SOAK_THINK_SECONDS", "0.2"))
DRAIN_SECONDS = float(os.environ.get("SOAK_DRAIN_SECONDS", "600"))
MALFORMED_RATIO, DUPLICATE_RATIO = 0.02, 0.03
SECRET = "whsec_" + base64.b64encode(bytes(range(140, 172))).decode()
LOGS = ROOT / "var" / "soak"
METRICS_DIR = LOGS / "metrics"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RECEIVER_PORT = _free_port()
use_bench_database(DB)
# The production shape: web processes and workers on their bounded pools (nothing here forks).
os.environ["DB_POOL"] = "true"
os.environ.update(
    ENFORCEMENT_WEBHOOK_URL=f"http://127.0.0.1:{RECEIVER_PORT}/hooks/enforcement",
    ENFORCEMENT_WEBHOOK_SECRET=SECRET,
    DETECTION_MODEL_CONFIG=str(LOGS / "no-model.json"),  # no image model: said so, not loaded
    PROMETHEUS_MULTIPROC_DIR=str(METRICS_DIR),
    LOG_LEVEL="WARNING",
)
for name in ("LLM_BASE_URL", "TRITON_URL"):
    os.environ.pop(name, None)


# --- measurements ---------------------------------------------------------------------------


class Record:
    """Latencies per operation, answers per operation and status, shared by every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = defaultdict(list)  # by operation and answer
        self.answers: Counter[tuple[str, int]] = Counter()
        self.failures: list[str] = []

    def took(self, op: str, status: int, seconds: float) -> None:
        with self.lock:
            self.answers[(op, status)] += 1
            self.seconds[f"{op}:{status}"].append(seconds)

    def failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


REC = Record()


class Api:
    """One keep-alive HTTP connection to a web process, with fixed headers (cookies, token)."""

    def __init__(self, port: int, headers: dict[str, str]):
        self.port, self.headers, self.conn = port, headers, None

    def call(self, op: str, method: str, path: str, body=None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, "Content-Type": "application/json"} if data else self.headers
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed an idle keep-alive connection before reading this request
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    REC.failed(f"{op}: connection lost twice")
                    return 0, None
                continue
            except OSError as exc:
                self.conn.close()
                self.conn = None
                REC.failed(f"{op}: {type(exc).__name__}: {exc}")
                return 0, None
            REC.took(op, response.status, time.perf_counter() - started)
            if response.status >= 500:
                REC.failed(f"{op}: {response.status} {raw[:200]!r}")
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, raw.decode(errors="replace")
        return 0, None


# --- the marketplace: receiver of webhooks, sender of appeals -------------------------------


class Marketplace:
    def __init__(self):
        from standardwebhooks import Webhook

        self.webhook = Webhook(SECRET)
        self.lock = threading.Lock()
        self.first_seen: dict[str, float] = {}  # webhook-id -> time.time() of its first arrival
        self.copies: Counter[str] = Counter()
        self.unverified = 0
        self.to_appeal: queue.Queue = queue.Queue()

    def serve(self) -> ThreadingHTTPServer:
        from standardwebhooks import WebhookVerificationError

        market = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    market.webhook.verify(body, headers)
                except WebhookVerificationError:
                    with market.lock:
                        market.unverified += 1
                    self._answer(401)
                    return
                webhook_id = headers["webhook-id"]
                with market.lock:
                    market.copies[webhook_id] += 1
                    first = webhook_id not in market.first_seen
                    if first:
                        market.first_seen[webhook_id] = time.time()
                if first:
                    message = json.loads(body)
                    if message["type"] == "enforcement.action":
                        market.to_appeal.put(message["data"])
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", RECEIVER_PORT), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        return server


def appellant(api: Api, market: Marketplace, stop: threading.Event, filed: dict) -> None:
    """Files an appeal for a share of the enforcement actions the marketplace was sent."""
    rng = random.Random(7)
    while not (stop.is_set() and market.to_appeal.empty()):
        try:
            data = market.to_appeal.get(timeout=0.2)
        except queue.Empty:
            continue
        if data["action"] not in ("remove_listing", "warn_seller") or rng.random() > APPEAL_SHARE:
            continue
        appeal = {
            "appeal_id": f"soak-appeal-{data['enforcement_id']}",
            "enforcement_id": data["enforcement_id"],
            "seller_id": data["seller_id"],
            "statement": "This listing follows the rules; please look again.",
            "submitted_at": datetime.now(UTC).isoformat(),
        }
        status, body = api.call("appeal", "POST", "/api/v1/appeals/", appeal)
        filed[appeal["appeal_id"]] = status
        if status != 201:
            REC.failed(f"appeal {appeal['appeal_id']}: {status} {str(body)[:200]}")
        elif rng.random() < RESEND_SHARE:
            status, body = api.call("appeal_again", "POST", "/api/v1/appeals/", appeal)
            if status != 200:
                REC.failed(f"appeal sent again {appeal['appeal_id']}: {status} {str(body)[:200]}")


# --- the people ------------------------------------------------------------------------------


def moderator(api: Api, seed: int, done: threading.Event, decided: dict) -> None:
    """Claim, look, decide; when nothing is left, wait a little and claim again, until `done`
    and the queue answers 204."""
    rng = random.Random(seed)
    while True:
        status, case = api.call("claim_next", "POST", "/api/v1/cases/claim-next/", {})
        if status == 204:
            if done.is_set():
                return
            time.sleep(0.5)
            continue
        if status != 200:
            time.sleep(0.5)
            continue
        time.sleep(rng.uniform(0.5, 1.5) * THINK_SECONDS)
        roll = rng.random()
        if roll < 0.45:
            body = {"verdict": "violation", "policy": case["policy"], "action": "remove"}
        elif roll < 0.6:
            body = {"verdict": "violation", "policy": case["policy"], "action": "warn"}
        else:
            body = {"verdict": "no_violation", "action": "none"}
        path = f"/api/v1/cases/{case['id']}/decision/"
        status, answer = api.call("decide", "POST", path, {**body, "notes": "soak"})
        if status == 422:  # the ladder refuses this one (e.g. no prior warning): clear it
            status, answer = api.call(
                "decide", "POST", path, {"verdict": "no_violation", "action": "none"}
            )
        if status == 201:
            decided.setdefault(case["id"], []).append(answer["id"])
        else:
            REC.failed(f"decide {case['id']}: {status} {str(answer)[:200]}")


def publisher(stop_at: float, sent: list) -> None:
    """The detection tier: BATCH events at a time, RATE a second, on the broker."""
    from detection.intake.simulator import DetectionTierSimulator
    from reviews.cases.intake import ingest_events_task

    # A few image variants per policy, drawn before the clock starts: the tier sends photos, it
    # does not spend the soak drawing them.
    sim = DetectionTierSimulator(seed=2026, sellers=3000, image_cache=8)
    sim.batch(200)
    started = time.monotonic()
    published = 0
    while time.monotonic() < stop_at:
        batch = sim.batch(BATCH, malformed_ratio=MALFORMED_RATIO, duplicate_ratio=DUPLICATE_RATIO)
        t0 = time.perf_counter()
        ingest_events_task.apply_async(args=[batch], queue="ingest")
        REC.took("publish", 0, time.perf_counter() - t0)  # no HTTP answer: 0
        sent.extend(ev["event_id"] for ev in batch)
        published += len(batch)
        wait = started + published / RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def health_probe(port: int, stop: threading.Event) -> None:
    """The floor of an API call during the soak: GET /healthz on the same web processes."""
    api = Api(port, {})
    while not stop.is_set():
        api.call("healthz", "GET", "/healthz")
        time.sleep(0.5)


# --- the portal's processes ------------------------------------------------------------------


def _spawn(name: str, args: list[str], **env: str) -> subprocess.Popen:
    log = (LOGS / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _worker(name: str, queues: str, concurrency: int) -> subprocess.Popen:
    return _spawn(
        name,
        [
            *("celery", "-A", "moderation_portal", "worker", "-Q", queues, "-c", str(concurrency)),
            *("-n", f"soak-{name}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"),
            *("--without-gossip", "--without-mingle"),
        ],
        LOG_LEVEL="INFO",  # the worker's "ready" line
    )


def _wait(what: str, ready, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def start_portal() -> tuple[list[subprocess.Popen], list[int]]:
    procs, ports = [], []
    # as ops/Procfile runs them on one node, enrich and llm sharing one worker
    workers = {"ingest": ("ingest", 2), "default": ("default", 2), "enrich-llm": ("enrich,llm", 1)}
    for name, (queues, concurrency) in workers.items():
        procs.append(_worker(name, queues, concurrency))
    procs.append(
        _spawn(
            "beat",
            [
                *("celery", "-A", "moderation_portal", "beat", "--loglevel", "INFO"),
                *("--schedule", str(LOGS / "celerybeat-schedule")),
            ],
        )
    )
    for i in range(WEB_PROCESSES):
        port = _free_port()
        ports.append(port)
        procs.append(
            _spawn(
                f"web-{i}",
                [
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "moderation_portal.asgi:application",
                ],
            )
        )
    for name, proc in zip(workers, procs, strict=False):
        log = LOGS / f"{name}.log"
        _wait(f"worker {name}", lambda log=log: " ready." in log.read_text(), proc)
    for i, port in enumerate(ports):
        proc = procs[len(workers) + 1 + i]
        _wait(
            f"web process {i}",
            lambda port=port: Api(port, {}).call("start", "GET", "/healthz")[0] == 200,
            proc,
        )
    return procs, ports


def stop_portal(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- the counts ------------------------------------------------------------------------------


def ingest_counts(port: int) -> Counter:
    """The portal's own count of what became of each event it was sent over Celery."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "portal_ingest_events":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["source"] == "celery":
                    counts[sample.labels["outcome"]] += int(sample.value)
    return counts


def until(what: str, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            print(f"soak: gave up waiting for {what}", flush=True)
            return False
        time.sleep(1)
    return True


def summary(key: str) -> dict:
    """p50/p99 of an operation's answers with one status ("decide:201"), or of the series."""
    from bench._common import summary_ms

    values = REC.seconds.get(key, [])
    return summary_ms(values) if values else {"n": 0}


def main() -> int:
    shutil.rmtree(LOGS, ignore_errors=True)
    METRICS_DIR.mkdir(parents=True)
    reset_database(DB)
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client

    from bench._common import RESULTS, write_result
    from detection.models import DeadLetter, DetectionEvent
    from moderation_portal.celery import app
    from reviews.appeals.models import Appeal, RefusedAppeal
    from reviews.models import Case, Decision, OutboxMessage

    app.control.purge()
    market = Marketplace()
    receiver = market.serve()
    procs, ports = start_portal()
    print(f"soak: portal up on ports {ports}; {SECONDS:.0f} s of load", flush=True)

    def session_headers(port: int, user) -> dict[str, str]:
        client = Client()
        client.force_login(user)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/login/")
        response = conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie", "")
        conn.close()
        csrf = cookie.split("csrftoken=", 1)[1].split(";", 1)[0]
        session = client.cookies["sessionid"].value
        return {"Cookie": f"csrftoken={csrf}; sessionid={session}", "X-CSRFToken": csrf}

    group = Group.objects.get(name="moderator")
    apis = []
    for i in range(MODERATORS):
        user = User.objects.create(username=f"soak-mod-{i}")
        user.groups.add(group)
        port = ports[i % len(ports)]
        apis.append(Api(port, session_headers(port, user)))
    out = __import__("io").StringIO()
    call_command("create_service_token", "marketplace", "--role", "marketplace", stdout=out)
    marketplace_api = Api(ports[-1], {"Authorization": f"Token {out.getvalue().strip()}"})

    sent: list[str] = []
    decided: dict[int, list[int]] = {}
    filed: dict[str, int] = {}
    done, stop_appeals, stop_probe = threading.Event(), threading.Event(), threading.Event()
    started = time.monotonic()
    threads = [threading.Thread(target=publisher, args=(started + SECONDS, sent))]
    threads += [
        threading.Thread(target=moderator, args=(api, i, done, decided))
        for i, api in enumerate(apis)
    ]
    people = threads[1:]
    appeals = threading.Thread(
        target=appellant, args=(marketplace_api, market, stop_appeals, filed)
    )
    probe = threading.Thread(target=health_probe, args=(ports[0], stop_probe))
    for thread in [*threads, appeals, probe]:
        thread.start()
    threads[0].join()
    load_seconds = time.monotonic() - started
    print(f"soak: published {len(sent)} events; draining", flush=True)

    # --- drain: everything in flight finishes, or the soak fails ------------------------------
    drain_until = time.monotonic() + DRAIN_SECONDS

    def left() -> float:
        return max(1.0, drain_until - time.monotonic())

    def ingested() -> bool:
        counts = ingest_counts(ports[0])
        return sum(counts.values()) >= len(sent)

    until("ingest", ingested, left())
    review = Case.objects.filter(queue_kind="review", state__in=["queued", "claimed"])

    until("the review queue to empty", lambda: not review.exists(), left())
    done.set()
    for thread in people:
        thread.join(left())
    until(
        "deliveries",
        lambda: (
            not OutboxMessage.objects.exclude(state="delivered").exists()
            and market.to_appeal.empty()
        ),
        left(),
    )
    stop_appeals.set()
    appeals.join(left())
    # the appeals' own messages, none expected: appeals are filed, not decided, in the soak
    until(
        "deliveries", lambda: not OutboxMessage.objects.exclude(state="delivered").exists(), left()
    )
    drain_seconds = time.monotonic() - started - load_seconds
    stop_probe.set()
    probe.join(10)

    # --- the counts -----------------------------------------------------------------------------
    counts = ingest_counts(ports[0])
    accepted = DetectionEvent.objects.filter(source="celery").count()
    dead_letters = DeadLetter.objects.count()
    human = list(Decision.objects.filter(source="human").values_list("case_id", "id"))
    outbox = dict(OutboxMessage.objects.values_list("webhook_id", "state"))
    with market.lock:
        seen = dict(market.copies)
        first_seen = dict(market.first_seen)
        unverified = market.unverified
    appeals_201 = {aid for aid, status in filed.items() if status == 201}
    recorded_appeals = set(Appeal.objects.values_list("appeal_id", flat=True))
    checks = {
        "events_sent_equal_accepted_duplicates_dead_letters": (
            len(sent),
            accepted + counts["duplicate"] + dead_letters,
        ),
        "accepted_counted_equal_events_stored": (counts["accepted"], accepted),
        "rejected_counted_equal_dead_letters_kept": (counts["rejected"], dead_letters),
        "distinct_events_sent_equal_accepted_plus_dead_letters": (
            len(set(sent)),
            accepted + dead_letters,
        ),
        "cases_decided_by_moderators_equal_human_decisions": (
            sorted((case_id, ids[0]) for case_id, ids in decided.items()),
            sorted(human),
        ),
        "no_case_decided_twice": ([], [c for c, ids in decided.items() if len(ids) > 1]),
        "no_case_left_claimed": (0, Case.objects.filter(state="claimed").count()),
        "outbox_rows_equal_delivered": (len(outbox), Counter(outbox.values())["delivered"]),
        "webhook_ids_received_equal_outbox": (sorted(outbox), sorted(seen)),
        "every_webhook_verified": (0, unverified),
        "appeals_filed_equal_appeals_recorded": (sorted(appeals_201), sorted(recorded_appeals)),
        "appeals_refused": (0, RefusedAppeal.objects.count()),
        "requests_failed_or_5xx": ([], REC.failures[:20]),
    }
    reconciled = {name: a == b for name, (a, b) in checks.items()}

    lag = []
    for webhook_id, created in OutboxMessage.objects.values_list("webhook_id", "created_at"):
        if webhook_id in first_seen:
            lag.append(first_seen[webhook_id] - created.timestamp())
    ingest_lag = [
        (r - e).total_seconds()
        for r, e in DetectionEvent.objects.filter(source="celery").values_list(
            "received_at", "emitted_at"
        )
    ]
    REC.seconds["delivery_lag"] = lag
    REC.seconds["ingest_lag"] = ingest_lag
    claims = {status: n for (op, status), n in REC.answers.items() if op == "claim_next"}
    decisions_total = len(human)
    automatic = Decision.objects.exclude(source="human").count()
    escalated = Case.objects.filter(queue_kind="escalation").count()
    # Enrichment runs behind ingest; a case it routes to people after the queue emptied (a
    # re-upload of an image a moderator confirmed as a violation) waits for the next shift.
    routed_late = review.count()
    with app.connection_for_write() as conn:
        enrich_waiting = conn.default_channel.client.llen("enrich")
    receiver.shutdown()
    stop_portal(procs)

    figures = {
        "load_seconds": round(load_seconds, 1),
        "drain_seconds": round(drain_seconds, 1),
        "moderators": MODERATORS,
        "web_processes": WEB_PROCESSES,
        "throughput_per_s": {
            "events_published": round(len(sent) / load_seconds, 1),
            "events_accepted": round(accepted / load_seconds, 1),
            "human_decisions": round(decisions_total / load_seconds, 2),
            "webhooks_delivered": round(len(first_seen) / load_seconds, 2),
            "appeals_filed": round(len(appeals_201) / load_seconds, 2),
        },
        "counts": {
            "events_sent": len(sent),
            "accepted": accepted,
            "duplicates": counts["duplicate"],
            "dead_letters": dead_letters,
            "human_decisions": decisions_total,
            "automatic_decisions": automatic,
            "escalated_cases": escalated,
            "review_cases_routed_after_the_queue_emptied": routed_late,
            "enrichment_tasks_waiting_at_the_end": enrich_waiting,
            "claims_answered": {str(k): v for k, v in sorted(claims.items())},
            "outbox_messages": len(outbox),
            "webhook_copies_beyond_first": sum(seen.values()) - len(seen),
            "appeals_filed": len(appeals_201),
            "appeals_sent_again": REC.answers[("appeal_again", 200)],
        },
        "latency": {
            "publish": summary("publish:0"),
            "claim_next": summary("claim_next:200"),
            "claim_next_empty": summary("claim_next:204"),
            "decide": summary("decide:201"),
            "appeal": summary("appeal:201"),
            "appeal_sent_again": summary("appeal_again:200"),
            "delivery_lag": summary("delivery_lag"),
            "ingest_lag": summary("ingest_lag"),
        },
        "reconciled": reconciled,
    }
    healthz = summary("healthz:200")
    p50 = healthz.get("p50_ms") or float("nan")
    ratio = {
        f"{op}_p50_over_healthz": round(figures["latency"][op]["p50_ms"] / p50, 2)
        for op in ("claim_next", "decide", "appeal")
        if figures["latency"][op].get("n")
    }
    failed = [name for name, ok in reconciled.items() if not ok]
    notes = (
        f"{SECONDS:.0f} s of load at {RATE:g} events/s (batches of {BATCH}, "
        f"{MALFORMED_RATIO:.0%} malformed, {DUPLICATE_RATIO:.0%} redelivered), {MODERATORS} "
        f"moderators over {WEB_PROCESSES} Daphne processes ({THINK_SECONDS:g} s mean look at "
        "each case), Celery workers for ingest (2), default (2) and enrich+llm (1), beat "
        "sending the delivery task every 5 s (so delivery lag includes up to 5 s of waiting for "
        "it). "
        "Models and the LLM are not configured. Latencies: publish is the apply_async call; "
        "claim_next is a claim that got a case (200), claim_next_empty one answered 204 (the "
        "queue was empty); delivery lag runs from the outbox row's commit "
        "to the receiver's first copy; ingest lag from the event's emitted_at to its storage. "
        "Everything shares the machine's cores with PostgreSQL and Redis."
    )
    if failed:
        notes += " NOT RECONCILED: " + ", ".join(failed)
    path = write_result(
        "soak",
        figures=figures,
        baseline={"healthz_during_the_soak": healthz},
        ratio=ratio,
        notes=notes,
    )
    copy = ROOT / "var" / "bench" / "soak.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, copy)
    (RESULTS / "soak.md").write_text(markdown(figures, healthz, checks, notes))
    for name in failed:
        expected, actual = checks[name]
        print(f"soak: {name} does not reconcile: {str(expected)[:300]} != {str(actual)[:300]}")
    print(f"soak: {'FAILED' if failed else 'reconciled'}; wrote {path} and {RESULTS / 'soak.md'}")
    return 1 if failed else 0


def markdown(figures: dict, healthz: dict, checks: dict, notes: str) -> str:
    lines = ["# Soak report", "", notes, "", "## Throughput (per second of load)", ""]
    lines += ["| what | per s |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in figures["throughput_per_s"].items()]
    lines += [
        "",
        "## Latency",
        "",
        "| operation | n | p50 ms | p99 ms |",
        "| --- | --- | --- | --- |",
    ]
    for op, s in [*figures["latency"].items(), ("healthz (baseline)", healthz)]:
        lines.append(
            f"| {op} | {s.get('n', 0)} | {s.get('p50_ms', '-')} | {s.get('p99_ms', '-')} |"
        )
    lines += ["", "## Counts", "", "| what | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in figures["counts"].items()]
    lines += ["", "## Reconciliation", "", "| check | result |", "| --- | --- |"]
    for name in checks:
        lines.append(f"| {name} | {'ok' if figures['reconciled'][name] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
