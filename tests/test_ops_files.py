"""The operations files in ops/: the Prometheus scrape configuration, the alert rules and the
Grafana dashboard parse, have the structure their tools read, and name only metrics the portal
really exports.

What the portal exports: every family defined in this process (moderation_portal.core.metrics
and django-prometheus's request metrics, each written by whichever process records it) and the
families the scrape collectors yield, which a real `GET /metrics` must carry.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.test import Client
from django_prometheus.middleware import Metrics
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from moderation_portal.core import metrics

OPS = Path(__file__).resolve().parent.parent / "ops"
PROMETHEUS = OPS / "prometheus" / "prometheus.yml"
ALERTS = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "alerts_test.yml"
DASHBOARD = OPS / "grafana" / "portal.json"

METRIC = re.compile(r"\b((?:portal|django_http)_[a-zA-Z0-9_]*)")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
SEVERITIES = {"page", "ticket"}


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"expr", "definition", "query"} and isinstance(value, str):
                    found.append(value)  # a panel's query, a variable's query
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def referenced(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


def family_of(name: str, families: set[str]) -> str | None:
    if name in families:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix)
    return None


@pytest.fixture
def exported(db) -> set[str]:
    """Every family the portal exports, by its name without sample suffixes."""
    Metrics.get_instance()  # django-prometheus defines its families with the first middleware
    defined = {family.name for family in REGISTRY.collect()}
    assert "portal_decisions" in defined
    collected = {
        family.name for collect in metrics.scrape_collectors().values() for family in collect()
    }
    # the scrape collectors' families (and the view's own) are in a real scrape, every time
    response = Client().get("/metrics")
    assert response.status_code == 200
    scraped = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert collected | {"portal_scrape_collector_errors"} <= scraped
    return defined | scraped


def test_the_scrape_collectors_are_the_portals():
    assert {"dead_letters", "queues", "enforcement", "llm_breaker", "drift"} <= set(
        metrics.scrape_collectors()
    )


def test_every_metric_the_alert_rules_name_is_exported(exported):
    names = referenced([rule["expr"] for rule in alert_rules()])
    assert {"portal_queue_sla_breached", "portal_drift_alarm", "portal_celery_tasks_total"} <= names
    unknown = sorted(name for name in names if family_of(name, exported) is None)
    assert unknown == [], f"alerts.yml names metrics the portal does not export: {unknown}"


def test_every_metric_the_dashboard_shows_is_exported(exported):
    expressions = dashboard_expressions()
    names = referenced(expressions)
    assert len(names) >= 30
    unknown = sorted(name for name in names if family_of(name, exported) is None)
    assert unknown == [], f"portal.json names metrics the portal does not export: {unknown}"
    # and every portal family the code records appears somewhere on it
    shown = {family_of(name, exported) for name in names}
    portal = {name for name in exported if name.startswith("portal_")}
    assert portal - shown == set()


def test_the_name_matching_is_strict():
    # a family's sample suffixes map to it; anything else is not a family of the portal's
    families = {"portal_claims", "portal_claim_latency_seconds", "portal_queue_depth"}
    assert family_of("portal_claims_total", families) == "portal_claims"
    assert family_of("portal_claim_latency_seconds_bucket", families) == (
        "portal_claim_latency_seconds"
    )
    assert family_of("portal_queue_depth", families) == "portal_queue_depth"
    assert family_of("portal_queue_depths", families) is None
    assert family_of("portal_claims_bucket_total", families) is None
    assert referenced(['sum(rate(portal_claims_total{queue="all"}[5m])) / up']) == {
        "portal_claims_total"
    }


def test_the_alert_rules_have_the_structure_prometheus_reads():
    data = yaml.safe_load(ALERTS.read_text())
    assert set(data) == {"groups"}
    names = [group["name"] for group in data["groups"]]
    assert len(names) == len(set(names))
    alerts = []
    for group in data["groups"]:
        assert set(group) == {"name", "rules"}
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Portal[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip(), rule["alert"]
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
            assert DURATION.match(str(rule["for"])), rule["alert"]
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
            assert all(isinstance(v, str) and v for v in rule["annotations"].values())
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    # the rules the portal's operators asked for
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert "portal_queue_sla_breached" in expressions["PortalSlaBreachesRising"]
    assert "> 500" in expressions["PortalQueueDepthHigh"]
    assert "0.05" in expressions["PortalCeleryTaskFailureRate"]
    assert "[10m]" in expressions["PortalCeleryTaskFailureRate"]
    assert "portal_enforcement_deliveries_total" in expressions["PortalWebhookDeliveryFailures"]
    assert (
        "portal_enforcement_oldest_pending_age_seconds"
        in (expressions["PortalEnforcementBacklogOld"])
    )
    assert "portal_llm_breaker_open" in expressions["PortalLlmBreakerOpen"]
    assert re.search(r"portal_drift_alarm\)? > 0", expressions["PortalDriftAlarm"])
    assert "portal_dead_letters_waiting" in expressions["PortalDeadLettersWaiting"]
    depth = next(r for r in alert_rules() if r["alert"] == "PortalQueueDepthHigh")
    assert depth["for"] == "20m"


def test_the_scrape_configuration_scrapes_metrics_with_the_token_and_loads_the_rules():
    data = yaml.safe_load(PROMETHEUS.read_text())
    assert data["rule_files"] == ["alerts.yml"]
    (job,) = data["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"].startswith("/")
    assert all(
        re.fullmatch(r"[a-z0-9.-]+:[0-9]+", target)
        for config in job["static_configs"]
        for target in config["targets"]
    )
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        assert DURATION.match(data["global"][key]), key


def test_the_dashboard_takes_its_datasource_from_a_variable():
    data = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
        box = panel["gridPos"]
        assert box["x"] >= 0, panel["title"]
        assert box["x"] + box["w"] <= 24, panel["title"]
    # no two panels overlap on the grid
    cells = set()
    for panel in data["panels"]:
        box = panel["gridPos"]
        mine = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


NO_PROMTOOL = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (make prometheus)"
)


def promtool(*args: str) -> str:
    result = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@NO_PROMTOOL
def test_promtool_accepts_the_rules():
    promtool("check", "rules", str(ALERTS))


def loopback_job() -> dict:
    """The loopback job prometheus.yml shows in a comment, as Prometheus would read it once
    uncommented."""
    lines = PROMETHEUS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "- job_name: moderation-portal-local" in line)
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append(line.removeprefix("  #").removeprefix(" "))
    (job,) = yaml.safe_load("\n".join(block))
    return job


@NO_PROMTOOL
def test_promtool_accepts_the_scrape_configuration(tmp_path):
    # As deployed, but with the token file where this test can write one; the rules are the
    # repository's (promtool checks them too, and every file the configuration names).
    token = tmp_path / "portal-metrics-token"
    token.write_text("s3cret-scrape-token\n")
    data = yaml.safe_load(PROMETHEUS.read_text())
    data["rule_files"] = [str(ALERTS)]
    data["scrape_configs"][0]["authorization"]["credentials_file"] = str(token)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(data))
    out = promtool("check", "config", str(config))
    assert f"SUCCESS: {config} is valid prometheus config file syntax" in out
    assert re.search(r"SUCCESS: \d+ rules found", out), out
    # the token file must exist: without it the configuration is refused
    token.unlink()
    missing = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert missing.returncode != 0
    assert "portal-metrics-token" in missing.stdout + missing.stderr
    # the loopback job instead of the token job: valid too, and needs no token
    job = loopback_job()
    assert job["job_name"] == "moderation-portal-local"
    assert "authorization" not in job
    data["scrape_configs"] = [job]
    config.write_text(yaml.safe_dump(data))
    promtool("check", "config", str(config))


@NO_PROMTOOL
def test_the_alert_rules_fire_on_the_series_their_unit_tests_feed():
    # ops/prometheus/alerts_test.yml: each alert fires, with its labels and annotations, once
    # its series have held for its `for`, and not on healthy series
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert {"PortalQueueDepthHigh", "PortalDriftAlarm", "PortalDeadLettersWaiting"} <= tested
    assert tested <= {rule["alert"] for rule in alert_rules()}
    out = promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out
