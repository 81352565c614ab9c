"""A real Prometheus server scrapes a real portal process (Daphne, on this test's database) with
the jobs of ops/prometheus/prometheus.yml and loads ops/prometheus/alerts.yml: what its HTTP API
then says is what an operator's Prometheus would hold.

The token job goes through a reverse proxy on the same host, as a TLS front would relay it: a
forwarded request closes the loopback door, so there only the bearer token opens `/metrics`.
"""

import copy
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from detection.models import DeadLetter
from reviews.cases.intake import detections_ingest
from reviews.models import Case, Queue
from tests import factories as f
from tests.processes import daphne_start, free_port, process_env, process_stop
from tests.test_ops_files import ALERTS, PROMETHEUS, loopback_job

PROMETHEUS_SERVER = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS_SERVER is None, reason="the prometheus server is not installed (make prometheus)"
)

TOKEN = "scrape-token-of-this-test"
LOCAL, TOKEN_JOB = "moderation-portal-local", "moderation-portal"
WRONG_TOKEN, NO_TOKEN = "wrong-token-via-proxy", "no-token-via-proxy"
WAIT_SECONDS = 30


class _Relay(BaseHTTPRequestHandler):
    """Passes a GET to the upstream portal with X-Forwarded-For and the Authorization it got,
    and answers with what the portal answered."""

    upstream = ""

    def do_GET(self) -> None:
        headers = {"X-Forwarded-For": self.client_address[0]}
        if "Authorization" in self.headers:
            headers["Authorization"] = self.headers["Authorization"]
        request = urllib.request.Request(self.upstream + self.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, kind, body = answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as refused:
            status, kind, body = refused.code, refused.headers["Content-Type"], refused.read()
        self.send_response(status)
        self.send_header("Content-Type", kind or "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _relay_serving(upstream: str) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Relay", (_Relay,), {"upstream": upstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


def _config(tmp_path: Path, *, portal: str, relay: str) -> Path:
    """prometheus.yml as deployed, scraping every second: its loopback job at the portal, its
    token job (over plain HTTP: the relay stands for the TLS front) through the relay, and the
    token job again with a wrong token and with none."""
    deployed = yaml.safe_load(PROMETHEUS.read_text())
    right, wrong = tmp_path / "token", tmp_path / "wrong-token"
    right.write_text(TOKEN + "\n")
    wrong.write_text(TOKEN + "-not\n")
    local = loopback_job()
    local["static_configs"][0]["targets"] = [portal]
    (token_job,) = deployed["scrape_configs"]
    token_job["scheme"] = "http"
    token_job["authorization"]["credentials_file"] = str(right)
    token_job["static_configs"] = [{"targets": [relay], "labels": {"service": "moderation-portal"}}]
    wrong_job = copy.deepcopy(token_job)
    wrong_job["job_name"] = WRONG_TOKEN
    wrong_job["authorization"]["credentials_file"] = str(wrong)
    no_token_job = copy.deepcopy(token_job)
    no_token_job["job_name"] = NO_TOKEN
    del no_token_job["authorization"]
    deployed["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    deployed["rule_files"] = [str(ALERTS)]
    deployed["scrape_configs"] = [local, token_job, wrong_job, no_token_job]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(deployed))
    return path


class Prometheus:
    def __init__(self, base: str):
        self.base = base

    def api(self, path: str, **params: str):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base}/api/v1/{path}{query}", timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def values(self, expr: str, by: str | None = None) -> dict[str | None, float]:
        """The instant vector of `expr`, by each series' value of the label `by` (None for
        every series without `by`: then there must be only one)."""
        out: dict[str | None, float] = {}
        for series in self.api("query", query=expr)["result"]:
            key = series["metric"].get(by) if by else None
            assert key not in out, (expr, series)
            out[key] = float(series["value"][1])
        return out


def _eventually(what: str, check: Callable[[], object], log: Path) -> object:
    """`check()`'s first true answer within WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            answer = check()
        except (OSError, ValueError):
            answer = None
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {log.read_text()[-3000:]}")
        time.sleep(0.25)


@pytest.fixture
def queued(transactional_db) -> None:
    """Five cases waiting for people (three firearms, two drugs) and two dead letters, made
    through ingest and committed before anything scrapes."""
    events = [f.event(score=0.6, images=[]) for _ in range(3)]  # human review: high-harm
    events += [f.event(policy="drugs", score=0.62, images=[]) for _ in range(2)]
    rejected = [f.mutate(f.event(images=[]), "detection.scores", {"guns": 0.9}) for _ in range(2)]
    outcomes = detections_ingest(events=events + rejected, source="api")
    assert [o.status for o in outcomes] == ["accepted"] * 5 + ["rejected"] * 2
    assert Case.objects.filter(state=Case.State.QUEUED).count() == 5
    assert DeadLetter.objects.filter(state="pending").count() == 2


@pytest.fixture
def scraped(queued, tmp_path) -> Iterator[tuple[Prometheus, Path]]:
    """The portal served by Daphne (with METRICS_TOKEN set), the relay in front of it, and a
    Prometheus scraping both; yields the Prometheus and its log. Stops all three after."""
    env = process_env(without=("TRITON_URL", "LLM_URL"), METRICS_TOKEN=TOKEN)
    web, base = daphne_start(env=env, log=tmp_path / "web.log", options=("-v", "0"), timeout=90)
    relay = server = None
    try:
        relay, relay_address = _relay_serving(base)
        port = free_port()
        log = tmp_path / "prometheus.log"
        config = _config(tmp_path, portal=base.removeprefix("http://"), relay=relay_address)
        with log.open("w") as out:
            server = subprocess.Popen(
                [
                    PROMETHEUS_SERVER,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        _eventually("Prometheus did not start", lambda: prometheus.api("status/buildinfo"), log)
        yield prometheus, log
    finally:
        if server is not None:
            process_stop(server)
        if relay is not None:
            relay.shutdown()
            relay.server_close()
        process_stop(web)


def test_a_real_prometheus_scrapes_the_portal_and_loads_the_rules(scraped):
    prometheus, log = scraped

    # The loopback job and the token job are up; through the relay a wrong token or none is
    # refused by the portal (403), not by the relay or a timeout.
    def targets() -> dict[str, dict] | None:
        active = prometheus.api("targets", state="active")["activeTargets"]
        by_job = {t["labels"]["job"]: t for t in active}
        if set(by_job) != {LOCAL, TOKEN_JOB, WRONG_TOKEN, NO_TOKEN}:
            return None  # not all discovered yet
        settled = (
            by_job[LOCAL]["health"] == "up"
            and by_job[TOKEN_JOB]["health"] == "up"
            and all("403" in by_job[job]["lastError"] for job in (WRONG_TOKEN, NO_TOKEN))
        )
        return by_job if settled else None

    by_job = _eventually("the targets did not settle", targets, log)
    for job in (WRONG_TOKEN, NO_TOKEN):
        assert by_job[job]["health"] == "down"
        assert by_job[job]["lastError"] == "server returned HTTP status 403 Forbidden", job
    assert by_job[TOKEN_JOB]["labels"]["service"] == "moderation-portal"
    assert prometheus.values(f'up{{job="{WRONG_TOKEN}"}}') == {None: 0.0}

    # What the database holds, per queue, as both jobs scraped it.
    slugs = Queue.objects.filter(kind__in=[Queue.Kind.REVIEW, Queue.Kind.ESCALATION])
    expected = dict.fromkeys(slugs.values_list("slug", flat=True), 0.0)
    expected.update({"all": 5.0, "high-harm": 3.0, "drugs": 2.0})
    for job in (LOCAL, TOKEN_JOB):
        depth = prometheus.values(f'portal_queue_depth{{job="{job}"}}', by="queue")
        assert depth == expected, job
        waiting = prometheus.values(f'portal_dead_letters_waiting{{job="{job}"}}')
        assert waiting == {None: 2.0}, job
    assert prometheus.values('portal_scrape_collector_errors{job="moderation-portal"} > 0') == {}

    # django-prometheus's request families: the portal counted the scrapes it answered, the
    # refused ones too.
    served = prometheus.values(
        'sum by (status) (django_http_responses_total_by_status_view_method_total{view="metrics"})',
        by="status",
    )
    assert served.get("200", 0) >= 1, served
    assert served.get("403", 0) >= 1, served
    by_method = prometheus.values(
        f'django_http_requests_total_by_method_total{{job="{LOCAL}"}}', by="method"
    )
    assert by_method.get("GET", 0) >= 1, by_method

    # Every group of alerts.yml is loaded and evaluates without error. With dead letters waiting
    # their alert is pending (it fires after 30 minutes), and so is the one for drift checks
    # that never ran (none has: it fires after 3 hours); the queues are far from 500.
    wanted = yaml.safe_load(ALERTS.read_text())["groups"]
    pending = {"PortalDeadLettersWaiting", "PortalDriftChecksNeverRan"}

    def rules() -> list[dict] | None:
        groups = prometheus.api("rules")["groups"]
        evaluated = all(r["health"] == "ok" for g in groups for r in g["rules"])
        now = {r["name"] for g in groups for r in g["rules"] if r.get("state") == "pending"}
        return groups if evaluated and now == pending else None

    groups = _eventually("the rules were not evaluated", rules, log)
    assert {g["file"] for g in groups} == {str(ALERTS)}
    loaded = {g["name"]: [r["name"] for r in g["rules"]] for g in groups}
    assert loaded == {g["name"]: [r["alert"] for r in g["rules"]] for g in wanted}
    assert all(r["type"] == "alerting" for g in groups for r in g["rules"])
    states = {r["name"]: r["state"] for g in groups for r in g["rules"]}
    assert states["PortalQueueDepthHigh"] == "inactive"
    assert states["PortalScrapeCollectorFailing"] == "inactive"
    alerts = prometheus.api("alerts")["alerts"]
    assert {a["labels"]["alertname"]: a["state"] for a in alerts} == dict.fromkeys(
        pending, "pending"
    )
