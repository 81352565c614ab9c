"""`GET /metrics` end to end: scrapes before and after real ingest (a real Celery worker
process and the REST endpoint), decisions through the API, deliveries to a real receiver,
appeals, LLM verdicts from a fake OpenAI-protocol server on a socket, and the label export;
each counter moves by exactly what happened. The worker inherits PROMETHEUS_MULTIPROC_DIR, so
its counters show in the web process's scrape. Who may scrape is tested at the end.

Counters are compared as differences between two scrapes: files of earlier processes in the
multiprocess folder add the same to both.
"""

import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import prometheus_client.values
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from active_learning.labels.export import labels_export
from detection.models import DeadLetter
from llm_verify import services as llm_services
from moderation_portal.core import metrics
from reviews.appeals.services import appeal_claim_next, appeal_decide
from reviews.cases.intake import ingest_events_task
from reviews.cases.verification import llm_run_for_case
from reviews.enforcement.delivery import deliver_enforcements_task
from reviews.models import Case, Decision, Enforcement, OutboxMessage, Queue
from tests import factories as f
from tests.conftest import api_client_for
from tests.detection.conftest import celery_worker_process, wait_for  # noqa: F401  (a fixture)
from tests.llm_verify.conftest import Reply, llm_serving
from tests.reviews.helpers import open_cases
from tests.reviews.test_enforcement_delivery import receiver  # noqa: F401  (a fixture)

Samples = dict[tuple[str, frozenset], float]


def scrape(client: Client | None = None, **extra) -> Samples:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: Samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def changes(before: Samples, after: Samples, name: str) -> dict[frozenset, float]:
    """Every series of `name` that moved, by its labels."""
    keys = {k for k in (*before, *after) if k[0] == name}
    out = {k[1]: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    return {labels: d for labels, d in out.items() if d}


def labels(**kw) -> frozenset:
    return frozenset(kw.items())


# --- the store ---------------------------------------------------------------------------------


def test_every_process_writes_to_the_multiprocess_folder():
    # Chosen by the settings before prometheus_client was imported; a worker inherits it.
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert os.path.isdir(folder)
    assert prometheus_client.values.ValueClass.__name__ == "MmapedValue"


# --- ingest through a real worker and the REST endpoint ------------------------------------


@pytest.mark.celery_worker
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL: a real broker")
def test_ingest_through_a_worker_and_the_api_moves_the_counters_by_what_happened(
    celery_worker_process,  # noqa: F811  (the fixture imported above)
    tier_client,
):
    before = scrape()
    good = [f.event(score=0.6), f.event(policy="drugs", score=0.62), f.event(score=0.97)]
    bad = f.mutate(f.event(), "detection.scores", {"guns": 0.9})
    ingest_events_task.apply_async(args=[[*good, bad, good[0]]], queue="ingest")
    by_api = f.event(score=0.4)
    assert tier_client.post("/api/v1/detections/", [by_api], format="json").status_code == 200
    unparseable = tier_client.post(
        "/api/v1/detections/", data=b"[{not json", content_type="application/json"
    )
    assert unparseable.status_code == 400

    def worker_done() -> bool:
        return (
            moved(
                before,
                scrape(),
                "portal_celery_tasks_total",
                task="detection.ingest_events",
                state="success",
            )
            >= 1
        )

    assert wait_for(worker_done), celery_worker_process.read_text()[-3000:]
    after = scrape()

    code = DeadLetter.objects.get(event_id=bad["event_id"]).reasons[0]["code"]
    assert code == "unknown_policy"
    assert changes(before, after, "portal_ingest_events_total") == {
        labels(source="celery", outcome="accepted", code=""): 3,
        labels(source="celery", outcome="duplicate", code=""): 1,
        labels(source="celery", outcome="rejected", code="unknown_policy"): 1,
        labels(source="api", outcome="accepted", code=""): 1,
        labels(source="api", outcome="dead_lettered", code="unparseable_json"): 1,
    }
    # every policy's score of every stored event, under its model version
    scored = Counter(
        (policy, e["detection"]["model_version"])
        for e in [*good, by_api]
        for policy in e["detection"]["scores"]
    )
    assert changes(before, after, "portal_detection_score_count") == {
        labels(policy=p, model_version=v): n for (p, v), n in scored.items()
    }
    assert moved(
        before, after, "portal_detection_score_sum", policy="firearms", model_version="2026.11.1"
    ) == pytest.approx(0.6 + 0.97 + 0.4)
    assert (
        moved(
            before,
            after,
            "portal_detection_score_bucket",
            policy="firearms",
            model_version="2026.11.1",
            le="0.6",
        )
        == 2  # 0.4 and 0.6; 0.97 is above
    )
    opened = Counter(Case.objects.values_list("policy_id", "route"))
    assert sum(opened.values()) == 4
    assert changes(before, after, "portal_cases_opened_total") == {
        labels(policy=p, route=r): n for (p, r), n in opened.items()
    }
    # the 0.97 removal is an automatic decision, recorded by ingest in the worker
    assert changes(before, after, "portal_decisions_total") == {
        labels(source="automatic", verdict="violation", action="remove", policy="firearms"): 1
    }
    assert Decision.objects.filter(source="automatic").count() == 1
    # the worker's task: one success, one runtime, one wait since it was published
    task = {"task": "detection.ingest_events"}
    assert moved(before, after, "portal_celery_task_runtime_seconds_count", **task) == 1
    assert moved(before, after, "portal_celery_task_queue_wait_seconds_count", **task) == 1
    assert moved(before, after, "portal_celery_tasks_total", state="failure", **task) == 0
    # the web process's requests, by django-prometheus
    web = {"view": "api-detections", "transport": "http", "method": "POST"}
    assert (
        moved(before, after, "django_http_requests_total_by_view_transport_method_total", **web)
        == 2
    )
    # the dead letters waiting, read from the database at scrape time
    waiting = DeadLetter.objects.filter(state="pending").count()
    assert waiting == 2
    assert value(after, "portal_dead_letters_waiting") == waiting


# --- decisions through the API --------------------------------------------------------------


def test_decisions_through_the_api_count_once_and_only_when_committed(
    transactional_db, moderator, tmp_path
):
    open_cases(0.6, seller="seller-late")
    open_cases(0.62, seller="seller-refused")
    client = api_client_for(moderator)
    before = scrape()

    first = client.post("/api/v1/cases/claim-next/", {}, format="json").json()
    # past its SLA when the moderator decides
    Case.objects.filter(id=first["id"]).update(sla_due_at=timezone.now() - timedelta(hours=1))
    decided = client.post(
        f"/api/v1/cases/{first['id']}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "remove", "time_on_case_ms": 4200},
        format="json",
    )
    assert decided.status_code == 201
    second = client.post("/api/v1/cases/claim-next/", {}, format="json").json()
    # refused by the rules inside the decision's transaction: rolled back, never counted
    refused = client.post(
        f"/api/v1/cases/{second['id']}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "suspend"},
        format="json",
    )
    assert refused.status_code == 422
    cleared = client.post(
        f"/api/v1/cases/{second['id']}/decision/",
        {"verdict": "no_violation", "action": "none", "time_on_case_ms": 1500},
        format="json",
    )
    assert cleared.status_code == 201
    assert client.post("/api/v1/cases/claim-next/", {}, format="json").status_code == 204
    nope = client.post("/api/v1/cases/claim-next/", {"queue": "no-such-queue"}, format="json")
    assert nope.status_code == 404
    after = scrape()

    assert changes(before, after, "portal_decisions_total") == {
        labels(source="human", verdict="violation", action="remove", policy="firearms"): 1,
        # "no violation" names no policy: counted under the policy the case was flagged for
        labels(source="human", verdict="no_violation", action="none", policy="firearms"): 1,
    }
    assert Decision.objects.filter(source="human").count() == 2
    human = {"policy": "firearms", "source": "human"}
    assert moved(before, after, "portal_time_on_case_seconds_count", **human) == 2
    assert moved(before, after, "portal_time_on_case_seconds_sum", **human) == pytest.approx(5.7)
    assert changes(before, after, "portal_sla_breaches_total") == {labels(policy="firearms"): 1}
    assert changes(before, after, "portal_claims_total") == {
        labels(queue="all", outcome="claimed"): 2,
        labels(queue="all", outcome="empty"): 1,
        labels(queue="unknown", outcome="refused"): 1,
    }
    assert moved(before, after, "portal_claim_latency_seconds_count", queue="all") == 3

    # the two human judgements become training labels; the export counts what it wrote
    export = labels_export(out_dir=tmp_path, as_of=datetime.now(UTC))
    exported = scrape()
    assert export.manifest["counts"]["kind"] == {"hard_negative": 1, "positive": 1}
    assert changes(after, exported, "portal_labels_exported_total") == {
        labels(kind="hard_negative"): 1,
        labels(kind="positive"): 1,
    }


# --- deliveries to a real receiver, and the outbox backlog ------------------------------------


def backlog(samples: Samples) -> dict[str, float]:
    return {
        state: value(samples, "portal_enforcement_backlog", state=state)
        for state in ("pending", "sending", "retrying", "failed")
    }


def test_deliveries_to_a_real_receiver_count_each_attempt_and_the_lag(
    transactional_db,
    receiver,  # noqa: F811  (the fixture imported above)
    settings,
):
    settings.ENFORCEMENT_RETRY_SCHEDULE = (0, 0)  # two attempts, the second due at once
    (case,) = open_cases(0.97, seller="seller-delivered")  # a removal and the first-strike warning
    (other,) = open_cases(0.96, seller="seller-failed")
    kind = "enforcement.action"
    oldest = OutboxMessage.objects.order_by("created_at")[0].created_at
    started = timezone.now()
    waiting = scrape()
    finished = timezone.now()
    assert backlog(waiting) == {"pending": 4, "sending": 0, "retrying": 0, "failed": 0}
    age = value(waiting, "portal_enforcement_oldest_pending_age_seconds")
    assert (started - oldest).total_seconds() <= age <= (finished - oldest).total_seconds()

    # seller-delivered's removal (A1): 503, then accepted; its warning (A2) waits for it, then
    # goes. seller-failed's removal (B1): 500 twice, failed; its warning (B2) keeps waiting.
    removal, warning = OutboxMessage.objects.filter(enforcement__decision__case=case).order_by("id")
    failing = OutboxMessage.objects.filter(enforcement__decision__case=other).order_by("id")[0]
    receiver.script = [(503, {}), (500, {})]
    receiver.status = 204
    first_run = deliver_enforcements_task.apply().get()
    assert first_run == {"configured": True, "endpoint_enabled": True, "retrying": 2}
    receiver.script = [(204, {}), (204, {}), (500, {})]  # in id order: A1, A2, B1
    deliver_enforcements_task.apply().get()
    after = scrape()

    assert sorted(
        OutboxMessage.objects.filter(pk__in=[removal.pk, warning.pk, failing.pk]).values_list(
            "pk", "state"
        )
    ) == sorted([(removal.pk, "delivered"), (warning.pk, "delivered"), (failing.pk, "failed")])
    assert changes(waiting, after, "portal_enforcement_deliveries_total") == {
        labels(kind=kind, outcome="retry"): 2,
        labels(kind=kind, outcome="delivered"): 2,
        labels(kind=kind, outcome="failed"): 1,
    }
    assert moved(waiting, after, "portal_enforcement_delivery_lag_seconds_count", kind=kind) == 2
    # what the database holds now, state by state
    states = Counter(
        OutboxMessage.objects.exclude(state="delivered").values_list("state", flat=True)
    )
    assert backlog(after) == {
        state: states.get(state, 0) for state in ("pending", "sending", "retrying", "failed")
    }
    assert states == {"failed": 1, "pending": 1}  # seller-failed's warning waits behind it


def test_a_task_that_fails_counts_as_a_failure(transactional_db, settings):
    settings.ENFORCEMENT_WEBHOOK_URL = "http://127.0.0.1:9/hooks"
    settings.ENFORCEMENT_WEBHOOK_SECRET = "not-a-webhook-secret"
    before = scrape()
    result = deliver_enforcements_task.apply()
    assert result.failed()
    after = scrape()
    assert changes(before, after, "portal_celery_tasks_total") == {
        labels(task="reviews.deliver_enforcements_task", state="failure"): 1
    }
    assert (
        moved(
            before,
            after,
            "portal_celery_task_runtime_seconds_count",
            task="reviews.deliver_enforcements_task",
        )
        == 1
    )


# --- appeals ------------------------------------------------------------------------------------


def test_appeals_received_and_overturned(transactional_db, marketplace_client, appeals_staff):
    (case,) = open_cases(0.97, seller="seller-appeals")
    enforcement = Enforcement.objects.get(decision__case=case, action="remove_listing")
    before = scrape()
    body = {
        "appeal_id": "metrics-appeal",
        "enforcement_id": enforcement.pk,
        "seller_id": "seller-appeals",
        "statement": "It is a replica, not a gun.",
        "submitted_at": timezone.now().isoformat(),
    }
    opened = marketplace_client.post("/api/v1/appeals/", body, format="json")
    assert opened.status_code == 201, opened.content
    again = marketplace_client.post("/api/v1/appeals/", body, format="json")
    assert again.status_code == 200  # the same appeal: not a second one
    appeal = appeal_claim_next(user=appeals_staff)
    appeal_decide(appeal=appeal, user=appeals_staff, outcome="overturn", notes="A replica.")
    after = scrape()
    assert changes(before, after, "portal_appeals_total") == {
        labels(policy="firearms", source="automatic"): 1
    }
    assert changes(before, after, "portal_appeal_overturns_total") == {
        labels(policy="firearms", source="automatic", outcome="overturned"): 1
    }
    assert changes(before, after, "portal_decisions_total") == {
        labels(source="appeal", verdict="no_violation", action="none", policy="firearms"): 1
    }


# --- LLM verdicts and the breaker ------------------------------------------------------------


@pytest.fixture
def llm(settings):
    with llm_serving(
        settings,
        LLM_BREAKER_FAILURES=1,
        LLM_PROMPT_PRICE_PER_1K=0.5,
        LLM_COMPLETION_PRICE_PER_1K=1.5,
    ) as server:
        yield server
        breaker = llm_services.client().breaker
        breaker.store.close(breaker.name)  # the breaker lives in Redis: leave it closed


def test_llm_verdicts_by_outcome_with_tokens_cost_and_the_breaker(db, llm):
    from tests.reviews.test_llm_routing import DESCRIPTION, TITLE, verdict

    # in the LLM band; the verdict quotes the listing's text
    text = {"title": TITLE, "description": DESCRIPTION}
    confirmed, refused = open_cases(0.8, 0.8, seller="seller-llm", **text)
    before = scrape()
    assert value(before, "portal_llm_breaker_open") == 0
    llm.script(Reply.content(verdict(), prompt_tokens=812, completion_tokens=95))
    assert llm_run_for_case(case_id=confirmed.id).status == "ok"
    # a 401 cannot be cured by retrying: failed, and the breaker opens (one failure is enough)
    llm.script(Reply.error(401, "bad key"))
    (failing,) = open_cases(0.8, seller="seller-llm-2", **text)
    assert llm_run_for_case(case_id=failing.id).status == "error"
    opened = scrape()
    assert value(opened, "portal_llm_breaker_open") == 1
    assert llm_run_for_case(case_id=refused.id).status == "unavailable"
    after = scrape()

    assert changes(before, after, "portal_llm_verdicts_total") == {
        labels(outcome="confirmed"): 1,
        labels(outcome="failed"): 1,
        labels(outcome="breaker_open"): 1,
    }
    assert moved(before, after, "portal_llm_latency_seconds_count", outcome="confirmed") == 1
    assert changes(before, after, "portal_llm_tokens_total") == {
        labels(kind="prompt"): 812,
        labels(kind="completion"): 95,
    }
    assert moved(before, after, "portal_llm_cost_total") == pytest.approx(
        812 / 1000 * 0.5 + 95 / 1000 * 1.5
    )


# --- queue gauges -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_queue_gauges_are_what_the_database_holds(moderator):
    open_cases(0.6, 0.62, 0.64, seller="seller-q1")  # firearms
    open_cases(0.6, policy="drugs", seller="seller-q2")
    open_cases(0.6, policy="counterfeit", seller="seller-q3")
    claimed = api_client_for(moderator).post("/api/v1/cases/claim-next/", {}, format="json")
    assert claimed.status_code == 200
    Case.objects.filter(policy_id="drugs").update(sla_due_at=timezone.now() - timedelta(minutes=5))
    oldest_created = Case.objects.filter(state="queued").order_by("created_at")[0].created_at
    started = timezone.now()
    samples = scrape()
    finished = timezone.now()

    expected = {  # waiting cases (one firearms case is claimed), by queue
        "all": (4, 1),
        "high-harm": (2, 0),
        "drugs": (1, 1),
        "goods": (1, 0),
        "scam": (0, 0),
        "escalations": (0, 0),
    }
    case_queues = Queue.objects.filter(kind__in=["review", "escalation"])
    assert set(case_queues.values_list("slug", flat=True)) == set(expected)
    for slug, (depth, breached) in expected.items():
        assert value(samples, "portal_queue_depth", queue=slug) == depth, slug
        assert value(samples, "portal_queue_sla_breached", queue=slug) == breached, slug
    age = value(samples, "portal_queue_oldest_age_seconds", queue="all")
    assert (started - oldest_created).total_seconds() <= age
    assert age <= (finished - oldest_created).total_seconds()
    assert value(samples, "portal_queue_oldest_age_seconds", queue="scam") == 0
    # queues of other things than cases are not reported as empty case queues
    assert ("portal_queue_depth", frozenset({("queue", "labeling")})) not in samples


# --- who may scrape ---------------------------------------------------------------------------


def body(response) -> str:
    return response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["127.0.0.1", "127.10.0.3", "::1", "::ffff:127.0.0.1"])
def test_loopback_may_scrape(address):
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 200
    assert "portal_queue_depth" in body(response)


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["203.0.113.9", "10.0.0.1", "::ffff:10.0.0.1", "", "bogus"])
def test_other_addresses_are_refused(address):
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 403
    assert "portal_" not in body(response)
    assert "django_http" not in body(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_X_FORWARDED_FOR": "203.0.113.9"},
        {"HTTP_FORWARDED": "for=203.0.113.9"},
        {"HTTP_X_REAL_IP": "203.0.113.9"},
        {"HTTP_X_FORWARDED_FOR": ""},
    ],
)
def test_a_request_relayed_by_a_proxy_on_loopback_is_refused(header):
    response = Client().get("/metrics", **header)
    assert response.status_code == 403
    assert "portal_" not in body(response)


@pytest.mark.django_db
def test_the_bearer_token_opens_it_from_anywhere(settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    far = Client(REMOTE_ADDR="203.0.113.9")
    for wrong in ("Bearer wrong", "Bearer s3cret-scrape-toke", "Token s3cret-scrape-token", ""):
        refused = far.get("/metrics", HTTP_AUTHORIZATION=wrong)
        assert refused.status_code == 403, wrong
        assert "portal_" not in body(refused)
    allowed = far.get(
        "/metrics",
        HTTP_AUTHORIZATION="Bearer s3cret-scrape-token",
        HTTP_X_FORWARDED_FOR="198.51.100.4",  # through a proxy: the token is what counts
    )
    assert allowed.status_code == 200
    assert "portal_queue_depth" in body(allowed)


@pytest.mark.django_db
def test_no_token_configured_means_no_token_matches(settings):
    settings.METRICS_TOKEN = None
    far = Client(REMOTE_ADDR="203.0.113.9")
    for header in ("Bearer ", "Bearer None", "Bearer"):
        assert far.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_only_get(method):
    assert getattr(Client(), method)("/metrics").status_code == 405


@pytest.mark.django_db
def test_turned_off_it_says_so(monkeypatch):
    monkeypatch.setattr(metrics, "ENABLED", False)
    response = Client().get("/metrics")
    assert response.status_code == 503
    assert "turned off" in body(response)
    assert "portal_" not in body(response)


@pytest.mark.django_db
def test_a_failing_collector_is_reported_and_the_scrape_still_answers(monkeypatch):
    def broken():
        raise RuntimeError("the database went away")
        yield  # a generator, like the real collectors

    monkeypatch.setitem(metrics._SCRAPE_COLLECTORS, "broken", broken)
    samples = scrape()
    assert value(samples, "portal_scrape_collector_errors", collector="broken") == 1
    assert value(samples, "portal_scrape_collector_errors", collector="queues") == 0
    assert value(samples, "portal_queue_depth", queue="all") == 0
