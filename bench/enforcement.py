"""Enforcement delivery to the marketplace's webhook on PostgreSQL: the portal's delivery path
(`reviews.enforcement.delivery.deliveries_run` in a loop: claim under a lease in id order per
listing and seller, fix the body, sign, POST, record the attempt and the message's new state)
beside a bare signed `httpx2.Client().post` loop of the same bodies to the same receiver,
measured in the same run.

- Throughput: delivered messages per second with 1 delivery worker and with 4 worker processes
  at once, each run a few seconds; the bare loop in 1 and in 4 processes, posting the bodies
  that run delivered, round after round, for as long.
- Catch-up: a backlog of BENCH_ENFORCEMENT_MESSAGES (10,000) pending enforcement messages over
  many listings and sellers, a few hundred sellers with several messages each (so a seller's
  later messages wait for its earlier ones). A first run while the receiver is down (connection
  refused) sends every message it may and leaves it `retrying`; then the receiver is back, every
  message is made due, and 4 worker processes deliver the backlog: the time until every message
  is `delivered`, beside the bare loop posting the same bodies with 4 processes. The receiver
  counts the webhook-ids it saw: every message's id must arrive, and duplicates are reported.

The receiver is its own process (a ThreadingHTTPServer on 127.0.0.1 that verifies every request
with the `standardwebhooks` package and answers 204), so it does not take the GIL of the
processes being measured; on a 2-core machine it still shares the cores with them and with
PostgreSQL. The portal and the bare loop both keep one keep-alive HTTP client per process; a
bare loop with a new client per POST is reported beside them to show what a new client costs
(mostly building its TLS context, even for http://).
The bodies carry their statements of reasons, written by the portal's own code.
"""

import base64
import json
import multiprocessing as mp
import os
import socket
import time
import urllib.request
from collections import Counter
from contextlib import closing

from bench._db import reset_database, use_bench_database

DB = "moderation_portal_bench_enforcement"
MESSAGES = int(os.environ.get("BENCH_ENFORCEMENT_MESSAGES", "10000"))
SECONDS = float(os.environ.get("BENCH_ENFORCEMENT_SECONDS", "4"))
# Enough pending messages that a throughput run never runs dry within SECONDS.
THROUGHPUT_FILL = int(os.environ.get("BENCH_ENFORCEMENT_THROUGHPUT_FILL", "2000"))
# A safety cap on the outage and catch-up runs, far above what they take.
MAX_SECONDS = float(os.environ.get("BENCH_ENFORCEMENT_MAX_SECONDS", "3600"))
WORKERS = 4
RUN_LIMIT = 5  # attempts per deliveries_run call: the loop checks its deadline between calls
CLUSTERED_SHARE = 0.03  # sellers with several messages, as a share of the messages (300 of 10,000)
PER_CLUSTERED_SELLER = 5
SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
CONNECT_TIMEOUT, READ_TIMEOUT = 1.0, 2.0


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = _free_port()
URL = f"http://127.0.0.1:{PORT}/hooks/enforcement"

use_bench_database(DB)
os.environ.update(
    ENFORCEMENT_WEBHOOK_URL=URL,
    ENFORCEMENT_WEBHOOK_SECRET=SECRET,
    ENFORCEMENT_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT),
    ENFORCEMENT_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    # An hour after the first attempt: what the receiver refused waits in `retrying` until the
    # bench makes it due, instead of being tried again during the outage.
    ENFORCEMENT_RETRY_SCHEDULE="0,3600,3600,3600",
)


# --- the receiver (its own process) ----------------------------------------------------------


def _receive(port: int, secret: str) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks import Webhook, WebhookVerificationError

    webhook = Webhook(secret)
    lock = threading.Lock()
    seen: Counter[str] = Counter()
    rejected = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for clients that keep their connection

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/reset":
                with lock:
                    seen.clear()
                    rejected[0] = 0
                self._answer(204)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                webhook.verify(body, headers)
            except WebhookVerificationError:
                with lock:
                    rejected[0] += 1
                self._answer(401)
                return
            with lock:
                seen[headers["webhook-id"]] += 1
            self._answer(204)

        def do_GET(self):
            with lock:
                payload = json.dumps({"ids": dict(seen), "rejected": rejected[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever(poll_interval=0.05)


def _accepting() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=0.2):
            return True
    except OSError:
        return False


class Receiver:
    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None

    def start(self) -> None:
        self.proc = self.ctx.Process(target=_receive, args=(PORT, SECRET), daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 10
        while not _accepting():
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(10)
        if _accepting():
            raise RuntimeError("the receiver still accepts connections after stopping")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/stats", timeout=30) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{PORT}/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


# --- the backlog ----------------------------------------------------------------------------


def _fill(cur, prefix: str, n: int) -> dict:
    """n pending remove_listing messages, with their sellers, listings, events, closed
    automatic-removal cases, decisions and enforcement rows, in a few statements. The first
    clustered * PER_CLUSTERED_SELLER listings belong, round robin, to `clustered` sellers; every
    other listing has a seller of its own."""
    clustered = max(1, round(n * CLUSTERED_SHARE))
    in_clusters = min(n, clustered * PER_CLUSTERED_SELLER)
    sellers = clustered + (n - in_clusters)
    like = {"like": f"{prefix}l-%"}
    cur.execute(
        "INSERT INTO detection_seller (external_id, account_created_at, prior_violations,"
        " country, first_seen_at, updated_at)"
        " SELECT %(p)s || 's-' || g, now() - interval '400 days', 0, 'US', now(), now()"
        " FROM generate_series(1, %(sellers)s) g",
        {"p": prefix, "sellers": sellers},
    )
    cur.execute(
        "INSERT INTO detection_listing (external_id, seller_id, title, description, price_amount,"
        " price_currency, category, region, language, listed_at, first_seen_at)"
        " SELECT %(p)s || 'l-' || g, s.id, 'Listing ' || g, 'Description of listing ' || g,"
        " 10 + g %% 500, 'USD', 'other', 'US', 'en', now() - interval '1 hour', now()"
        " FROM generate_series(1, %(n)s) g JOIN detection_seller s ON s.external_id ="
        " %(p)s || 's-' || (CASE WHEN g <= %(in_clusters)s THEN (g - 1) %% %(clustered)s + 1"
        " ELSE %(clustered)s + g - %(in_clusters)s END)"
        " ORDER BY g",
        {"p": prefix, "n": n, "in_clusters": in_clusters, "clustered": clustered},
    )
    cur.execute(
        "INSERT INTO detection_detectionevent (event_id, trace_id, schema_version, emitted_at,"
        " received_at, listing_id, model_name, model_version, scores, modality_scores,"
        " reason_codes, is_sample, top_policy, top_score, source, ingest_batch)"
        " SELECT 'ev-' || l.external_id, 'tr-' || l.external_id, 1, now(), now(), l.id,"
        " 'listing-guard', '2026.11.1', '{\"firearms\": 0.97}'::jsonb, '{}'::jsonb, '[]'::jsonb,"
        " false, 'firearms', 0.97, 'bench', gen_random_uuid()"
        " FROM detection_listing l WHERE l.external_id LIKE %(like)s ORDER BY l.id",
        like,
    )
    cur.execute(
        "INSERT INTO reviews_case (detection_event_id, listing_id, trace_id, policy_id, score,"
        " region, language, route, route_reason, ladder_version_id, state, queue_kind,"
        " priority_key, sla_due_at, llm_state, ladder_action, suspension_review, created_at,"
        " decided_at)"
        " SELECT e.id, e.listing_id, e.trace_id, 'firearms', e.top_score, 'US', 'en',"
        " 'auto_action', 'bench', (SELECT id FROM reviews_ladderversion WHERE is_active),"
        " 'closed', 'review', now(), now() + interval '4 hours', 'not_applicable', 'remove',"
        " false, now(), now()"
        " FROM detection_detectionevent e JOIN detection_listing l ON l.id = e.listing_id"
        " WHERE l.external_id LIKE %(like)s ORDER BY l.id",
        like,
    )
    cur.execute(
        "INSERT INTO reviews_decision (case_id, verdict, policy_id, action, notes, source,"
        " ladder_version_id, trace_id, created_at)"
        " SELECT c.id, 'violation', 'firearms', 'remove', 'bench', 'automatic',"
        " c.ladder_version_id, c.trace_id, now()"
        " FROM reviews_case c JOIN detection_listing l ON l.id = c.listing_id"
        " WHERE l.external_id LIKE %(like)s ORDER BY l.id",
        like,
    )
    cur.execute(
        "INSERT INTO reviews_enforcement (decision_id, listing_id, action, created_at)"
        " SELECT d.id, c.listing_id, 'remove_listing', now()"
        " FROM reviews_decision d JOIN reviews_case c ON c.id = d.case_id"
        " JOIN detection_listing l ON l.id = c.listing_id"
        " WHERE l.external_id LIKE %(like)s ORDER BY l.id",
        like,
    )
    cur.execute(
        "INSERT INTO reviews_outboxmessage (webhook_id, type, enforcement_id, listing_id,"
        " seller_id, trace_id, state, attempts, next_attempt_at, last_error, created_at)"
        " SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), 'enforcement.action',"
        " en.id, l.id, l.seller_id, d.trace_id, 'pending', 0, now(), '', now()"
        " FROM reviews_enforcement en JOIN reviews_decision d ON d.id = en.decision_id"
        " JOIN detection_listing l ON l.id = en.listing_id"
        " WHERE l.external_id LIKE %(like)s ORDER BY l.id",
        like,
    )
    cur.execute("ANALYZE")
    return {"messages": n, "sellers": sellers, "sellers_with_several": clustered}


def _statements(prefix: str) -> int:
    """The statements of reasons of the phase's removals, written by the portal's own code (as
    a decision writes them), so that every body carries its statement as in production."""
    from django.db import transaction

    from reviews.enforcement.statements import statements_create
    from reviews.models import Decision

    ids = list(
        Decision.objects.filter(case__listing__external_id__startswith=f"{prefix}l-")
        .order_by("id")
        .values_list("id", flat=True)
    )
    written = 0
    for start in range(0, len(ids), 1000):
        with transaction.atomic():
            chunk = list(Decision.objects.filter(id__in=ids[start : start + 1000]))
            written += len(statements_create(chunk))
    return written


def _phase(prefix: str):
    from reviews.enforcement.models import OutboxMessage

    return OutboxMessage.objects.filter(listing__external_id__startswith=f"{prefix}l-")


def _settle(prefix: str) -> None:
    """What a throughput run left undelivered is set aside (failed: never due again), so that
    the next run starts with only its own messages due. Each phase has sellers of its own, so a
    set-aside message holds back no later phase's message."""
    _phase(prefix).filter(state__in=["pending", "retrying"]).update(state="failed")


def _bodies(prefix: str, *, id_prefix: str) -> list[tuple[str, bytes]]:
    """The delivered messages' bodies, encoded as the portal sends them (sorted keys, compact)."""
    rows = _phase(prefix).filter(state="delivered").order_by("id").values_list("webhook_id", "body")
    return [
        (id_prefix + webhook_id, json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        for webhook_id, body in rows
    ]


# --- the workers (pool processes) -----------------------------------------------------------


def _init() -> None:
    import django

    django.setup()


def _portal(args) -> tuple[dict, float]:
    """deliveries_run in a loop from `start_at` until `deadline`, or until it finds nothing to
    send: at once in `until_idle` mode (the outage run), else once no message is due or being
    sent (one being sent may let a later message of its seller go).
    Returns the outcomes counted and when the last productive call ended."""
    mode, start_at, deadline = args
    from django.db import connection
    from django.db.models import Q
    from django.utils import timezone

    from reviews.enforcement.delivery import deliveries_run
    from reviews.enforcement.models import OutboxMessage

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    counts: Counter[str] = Counter()
    while time.time() < start_at:
        time.sleep(0.001)
    last = start_at
    while time.time() < deadline:
        result = deliveries_run(limit=RUN_LIMIT)
        outcomes = {k: v for k, v in result.items() if k not in ("configured", "endpoint_enabled")}
        if outcomes:
            counts.update(outcomes)
            last = time.time()
            continue
        if mode == "until_idle":
            break
        now = timezone.now()
        due = Q(state__in=["pending", "retrying"], next_attempt_at__lte=now) | Q(state="sending")
        if not OutboxMessage.objects.filter(due).exists():
            break
        time.sleep(0.005)  # another worker holds the message that the rest wait for
    connection.close()
    return dict(counts), last


def _bare(args) -> tuple[int, float]:
    """POST the bodies, signed, with one keep-alive client (or a new client per POST): each
    once, or round after round (a fresh id per round) until `seconds` have passed."""
    bodies, start_at, seconds, client_per_post = args
    import httpx2

    from reviews.enforcement.webhooks import parse_secrets, sign

    secrets = parse_secrets(SECRET)
    timeout = httpx2.Timeout(
        connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=READ_TIMEOUT, pool=CONNECT_TIMEOUT
    )
    client = httpx2.Client(timeout=timeout)
    while time.time() < start_at:
        time.sleep(0.001)
    posts, rounds = 0, 0
    while True:
        for webhook_id, body in bodies:
            headers = sign(
                secrets=secrets,
                webhook_id=f"{webhook_id}_{rounds}",
                timestamp=int(time.time()),
                body=body,
            )
            if client_per_post:
                with httpx2.Client(timeout=timeout) as once:
                    status = once.post(URL, content=body, headers=headers).status_code
            else:
                status = client.post(URL, content=body, headers=headers).status_code
            if status != 204:
                raise RuntimeError(f"the receiver answered {status} to the bare loop")
            posts += 1
            if seconds is not None and time.time() >= start_at + seconds:
                break
        rounds += 1
        if seconds is None or time.time() >= start_at + seconds:
            break
    end = time.time()
    client.close()
    return posts, end


def portal_run(pool, workers: int, *, mode: str, seconds: float) -> dict:
    start_at = time.time() + 0.5
    results = pool.map(_portal, [(mode, start_at, start_at + seconds)] * workers, chunksize=1)
    counts: Counter[str] = Counter()
    for outcome, _ in results:
        counts.update(outcome)
    elapsed = max(last for _, last in results) - start_at
    return {
        "workers": workers,
        "seconds": round(elapsed, 3),
        **dict(sorted(counts.items())),
        "delivered_per_s": round(counts["delivered"] / elapsed, 1) if elapsed > 0 else None,
        "attempts_per_s": round(sum(counts.values()) / elapsed, 1) if elapsed > 0 else None,
    }


def bare_run(
    pool, processes: int, bodies: list, *, seconds: float | None, client_per_post: bool = False
) -> dict:
    """The bare loop in `processes` processes, each with its share of the bodies: every body
    once (seconds=None), or round after round for `seconds`."""
    start_at = time.time() + 0.5
    shares = [bodies[i::processes] for i in range(processes)]
    results = pool.map(
        _bare, [(share, start_at, seconds, client_per_post) for share in shares], chunksize=1
    )
    posts = sum(n for n, _ in results)
    elapsed = max(end for _, end in results) - start_at
    return {
        "processes": processes,
        "posts": posts,
        "seconds": round(elapsed, 3),
        "posts_per_s": round(posts / elapsed, 1),
    }


# --- the run --------------------------------------------------------------------------------


def main() -> int:
    import psycopg

    reset_database(DB)
    import django

    django.setup()
    from django.db import connection

    from bench._common import write_result
    from reviews.enforcement.models import DeliveryAttempt, WebhookEndpoint

    WebhookEndpoint.objects.get_or_create(url=URL)
    fills = {}

    def fill(prefix: str, n: int) -> None:
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            t0 = time.monotonic()
            fills[prefix] = _fill(conn.cursor(), prefix, n)
        fills[prefix]["statements_of_reasons"] = _statements(prefix)
        fills[prefix]["seconds"] = round(time.monotonic() - t0, 2)

    for prefix, n in (
        ("w", 40),
        ("t1", THROUGHPUT_FILL),
        ("t4", THROUGHPUT_FILL),
        ("c", MESSAGES),
    ):
        fill(prefix, n)
    # Only the warm-up's messages are due at first; each later phase's become due when it runs.
    for prefix in ("t1", "t4", "c"):
        _phase(prefix).update(next_attempt_at="2100-01-01T00:00:00Z")
    connection.close()

    ctx = mp.get_context("fork")
    receiver = Receiver(ctx)
    receiver.start()
    figures: dict = {"seconds_per_throughput_run": SECONDS}
    baseline: dict = {}
    ratio: dict = {}
    problems: list[str] = []
    from django.utils import timezone

    with ctx.Pool(WORKERS, initializer=_init) as pool:
        # Warm-up (connections, first statements, the receiver's threads), not counted.
        portal_run(pool, WORKERS, mode="drain", seconds=60)
        bare_run(pool, WORKERS, _bodies("w", id_prefix="warm_"), seconds=1.0)
        connection.close()

        for prefix, workers in (("t1", 1), ("t4", WORKERS)):
            _phase(prefix).update(next_attempt_at=timezone.now())
            connection.close()
            portal = portal_run(pool, workers, mode="drain", seconds=SECONDS)
            _settle(prefix)
            bodies = _bodies(prefix, id_prefix="bare_")
            connection.close()
            bare = bare_run(pool, workers, bodies, seconds=SECONDS)
            key = f"throughput_{workers}_worker{'s' if workers > 1 else ''}"
            figures[key] = portal
            baseline[key] = bare
            ratio[f"{key}_portal_over_bare"] = round(
                portal["delivered_per_s"] / bare["posts_per_s"], 3
            )
            if workers == 1:
                baseline["throughput_1_worker_new_client_per_post"] = bare_run(
                    pool, 1, bodies, seconds=SECONDS, client_per_post=True
                )
                ratio["throughput_1_worker_portal_over_bare_new_client_per_post"] = round(
                    portal["delivered_per_s"]
                    / baseline["throughput_1_worker_new_client_per_post"]["posts_per_s"],
                    3,
                )
            print(key, "portal", portal, "bare", bare, flush=True)

        # Catch-up: the receiver is down while the backlog is first sent.
        receiver.stop()
        _phase("c").update(next_attempt_at=timezone.now())
        connection.close()
        down = portal_run(pool, WORKERS, mode="until_idle", seconds=MAX_SECONDS)
        by_state = dict(Counter(_phase("c").values_list("state", flat=True)))
        figures["catch_up_outage_run"] = {**down, "states_after": by_state}
        print("outage run", figures["catch_up_outage_run"], flush=True)

        receiver.start()
        receiver.reset()
        _phase("c").filter(state="retrying").update(next_attempt_at=timezone.now())
        connection.close()
        catch_up = portal_run(pool, WORKERS, mode="drain", seconds=MAX_SECONDS)
        stats = receiver.stats()
        outbox_ids = set(_phase("c").values_list("webhook_id", flat=True))
        seen = Counter(stats["ids"])
        undelivered = _phase("c").exclude(state="delivered").count()
        bodies = _bodies("c", id_prefix="bare_")
        connection.close()
        sizes = [len(body) for _, body in bodies]
        figures["body_bytes"] = {"mean": round(sum(sizes) / len(sizes)), "max": max(sizes)}
        bare = bare_run(pool, WORKERS, bodies, seconds=None)

    receiver.stop()
    attempts = DeliveryAttempt.objects.filter(message__listing__external_id__startswith="cl-")
    figures["catch_up"] = {
        "messages": MESSAGES,
        "seconds": catch_up["seconds"],
        "delivered": catch_up.get("delivered", 0),
        "delivered_per_s": catch_up["delivered_per_s"],
        "undelivered_after": undelivered,
        "receiver_distinct_ids": len(seen),
        "receiver_requests": sum(seen.values()),
        "receiver_duplicates": sum(n - 1 for n in seen.values()),
        "receiver_rejected_signatures": stats["rejected"],
        "ids_not_in_outbox": len(set(seen) - outbox_ids),
        "outbox_ids_never_seen": len(outbox_ids - set(seen)),
        "delivery_attempt_rows": attempts.count(),
        "refused_attempt_rows": attempts.filter(status_code__isnull=True).count(),
    }
    baseline["catch_up_4_processes"] = bare
    ratio["catch_up_seconds_portal_over_bare"] = round(catch_up["seconds"] / bare["seconds"], 3)
    figures["fills"] = fills

    c = figures["catch_up"]
    if c["undelivered_after"]:
        problems.append(f"{c['undelivered_after']} messages not delivered")
    if c["receiver_distinct_ids"] != MESSAGES or c["outbox_ids_never_seen"]:
        problems.append(f"the receiver saw {c['receiver_distinct_ids']} of {MESSAGES} ids")
    if c["ids_not_in_outbox"] or c["receiver_rejected_signatures"]:
        problems.append("the receiver saw ids not in the outbox or signatures it rejected")

    write_result(
        "enforcement",
        figures=figures,
        baseline=baseline,
        ratio=ratio,
        aims={
            "catch_up_receiver_distinct_ids": f"== {MESSAGES} (every message arrives)",
            "catch_up_undelivered_after": "0",
        },
        notes="Portal: deliveries_run in a loop per worker process (claim one message under a "
        "lease, build and store the body on the first attempt, sign, POST with the process's "
        "keep-alive httpx2 client, record the DeliveryAttempt and the new state). Bare: the "
        "same bodies signed and POSTed with one keep-alive httpx2.Client per process (httpx2 "
        "is the httpx line the portal uses), no database. The receiver verifies every request "
        "with standardwebhooks in its own process; everything shares the 2 cores with "
        "PostgreSQL. Catch-up: the outage run sends each seller's oldest message (connection "
        "refused, so it waits in retrying); a seller's later messages wait, pending, for it. "
        + (f"PROBLEMS: {'; '.join(problems)}" if problems else "All checks held."),
    )
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
