"""Structured logs: with LOG_FORMAT=json every record is one JSON object on one line, whatever
hostile text it carries; the text format keeps `trace=`; and a case's trace id is in the lines
of the web process that opened and decided it and of the Celery worker that ran its tasks."""

import http.cookiejar
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import global_settings, settings
from django.contrib.auth.models import Group, User

from moderation_portal.celery import app
from moderation_portal.core.access import MODERATOR
from moderation_portal.core.logs import JsonFormatter
from moderation_portal.core.tracing import (
    FIELDS,
    TraceIdFilter,
    context_current,
    log_context,
    trace,
)
from tests import factories as f
from tests.processes import (
    celery_worker_start,
    complete_lines,
    daphne_start,
    process_env,
    process_stop,
)

ROOT = Path(__file__).resolve().parents[1]
CORE_KEYS = {"time", "level", "logger", "message", *FIELDS}
# Listing text as a hostile seller writes it: quotes, a forged JSON record on a new line, every
# kind of line break Python's str.splitlines() knows, a NUL, an escape sequence, a lone surrogate.
HOSTILE = (
    'Pistol "cheap" \\ {"x": 1}\n{"level": "CRITICAL", "trace_id": "forged"}\r\n'
    "tab\tcr\rline\u2028sep\u2029para\x85nel\x0bvt\x0cff\x1c\x1d\x1e\x00nul\x1b[31mred\ud800"
)


@contextmanager
def json_lines(only: logging.Logger | None = None):
    """What the portal's JSON handler writes while the block runs: all records, or only those of
    `only` (then not passed on to other handlers, whose formats may choke on them)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(JsonFormatter())
    target = only or logging.getLogger()
    target.addHandler(handler)
    if only:
        only.propagate = False
    try:
        yield stream
    finally:
        target.removeHandler(handler)
        if only:
            only.propagate = True


def records(stream: io.StringIO, logger: str | None = None) -> list[dict]:
    out = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [r for r in out if logger is None or r["logger"] == logger]


log = logging.getLogger("tests.json_logs")


# --- the formatter ---------------------------------------------------------------------------


def test_hostile_listing_text_in_a_message_stays_one_parseable_line():
    with (
        json_lines() as out,
        trace(
            "trace-h1",
            listing_id="listing-9",
            seller_id="seller-9",
            case_id=41,
            model_version="2026.11.1",
        ),
    ):
        log.warning("listing title %s", HOSTILE)
    text = out.getvalue()
    assert text.isascii()
    (line,) = text.splitlines()
    record = json.loads(line)
    assert record["message"] == f"listing title {HOSTILE}"
    assert set(record) == CORE_KEYS
    assert {k: record[k] for k in ("level", "logger", *FIELDS)} == {
        "level": "WARNING",
        "logger": "tests.json_logs",
        "trace_id": "trace-h1",
        "listing_id": "listing-9",
        "seller_id": "seller-9",
        "case_id": 41,
        "model_version": "2026.11.1",
    }


def test_time_is_iso_8601_utc_with_milliseconds():
    before = datetime.now(UTC)
    with json_lines() as out:
        log.info("now")
    after = datetime.now(UTC)
    (record,) = records(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    stamp = datetime.fromisoformat(record["time"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after


def test_outside_any_context_the_fields_are_null_and_contexts_nest():
    with json_lines() as out:
        log.info("nothing known")
        with trace("trace-outer", case_id=1, listing_id="listing-1"):
            with trace("trace-inner"):  # the old call: fields not given are kept
                log.info("inner")
            with log_context(listing_id=None, seller_id="seller-2"):
                log.info("listing cleared")
            with trace(None):
                log.info("no trace")
            log.info("outer again")
        log.info("after")
    got = [(r["message"], *(r[k] for k in FIELDS)) for r in records(out)]
    assert got == [
        ("nothing known", None, None, None, None, None),
        ("inner", "trace-inner", "listing-1", None, 1, None),
        ("listing cleared", "trace-outer", None, "seller-2", 1, None),
        ("no trace", None, "listing-1", None, 1, None),
        ("outer again", "trace-outer", "listing-1", None, 1, None),
        ("after", None, None, None, None, None),
    ]
    assert context_current() == {}
    with (
        pytest.raises(TypeError, match="unknown log context fields: listing"),
        log_context(listing="listing-1"),
    ):
        pass


class Unprintable:
    def __str__(self):
        raise RuntimeError("no str")

    def __repr__(self):
        raise RuntimeError("no repr")


def test_odd_records_still_come_out_as_one_line_each(capsys):
    when = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    log = logging.getLogger("tests.json_logs.odd")
    with json_lines(only=log) as out:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            log.exception("storing %s failed", "listing-3")
        log.info("%s and %s", "only one argument")
        log.info("value %s", Unprintable())
        log.info(
            "with extras",
            extra={
                "decision": {"id": 3, "tags": ["a", "b"]},
                "attempt": 2,
                "when": when,
                "blob": b"\x00\n",
                "ratio": float("nan"),
                "odd": Unprintable(),
                "ids": {1},
            },
        )
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    failed, mismatched, unprintable, extras = (json.loads(line) for line in lines)
    assert failed["message"] == "storing listing-3 failed"
    assert failed["exc_info"].startswith("Traceback (most recent call last):")
    assert failed["exc_info"].endswith(f"ValueError: {HOSTILE}")
    assert mismatched["message"] == (
        "%s and %s (arguments ('only one argument',) could not be formatted: TypeError)"
    )
    assert unprintable["message"] == (
        "value %s (arguments <unprintable tuple> could not be formatted: RuntimeError)"
    )
    assert {k: v for k, v in extras.items() if k not in CORE_KEYS} == {
        "decision": {"id": 3, "tags": ["a", "b"]},
        "attempt": 2,
        "when": "2026-11-03 12:00:00+00:00",
        "blob": "b'\\x00\\n'",
        "ratio": "nan",
        "odd": "<unprintable Unprintable>",
        "ids": "{1}",
    }
    assert "Logging error" not in capsys.readouterr().err


def test_the_text_format_keeps_trace():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter(settings.LOGGING["formatters"]["text"]["format"]))
    log.addHandler(handler)
    try:
        with trace("trace-t1", case_id=5):
            log.warning("case opened")
        log.warning("no case")
    finally:
        log.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} WARNING tests\.json_logs trace=trace-t1 case opened", first)
    assert re.fullmatch(rf"{stamp} WARNING tests\.json_logs trace=- no case", second)


# --- the setting, as a process starts --------------------------------------------------------

STARTUP = """
import logging, django
django.setup()
from moderation_portal.core.tracing import trace
with trace("trace-s1", case_id=7):
    logging.getLogger("portal.check").warning("hello")
"""


def start(log_format: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    if log_format is not None:
        env["LOG_FORMAT"] = log_format
    return subprocess.run(
        [sys.executable, "-c", STARTUP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_log_format_is_chosen_at_start_and_a_bad_value_refused():
    text = start(None)
    assert text.returncode == 0, text.stderr
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING portal\.check trace=trace-s1 hello",
        text.stderr.strip(),
    )
    as_json = start("json")
    assert as_json.returncode == 0, as_json.stderr
    (line,) = as_json.stderr.splitlines()
    record = json.loads(line)
    assert (record["logger"], record["message"], record["trace_id"], record["case_id"]) == (
        "portal.check",
        "hello",
        "trace-s1",
        7,
    )
    bad = start("xml")
    assert bad.returncode != 0
    assert "ImproperEnvironment: LOG_FORMAT='xml' is not a log format (text or json)" in (
        bad.stderr
    )


# --- Celery ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_eager_task_logs_the_context_it_was_sent_in(eager_celery):
    from reviews.cases.tasks import release_expired_leases_task

    with json_lines() as out:
        with log_context(trace_id="trace-e1", case_id=77, listing_id="listing-e1"):
            release_expired_leases_task.apply_async()
        release_expired_leases_task.apply_async()
    done = [
        (r["trace_id"], r["case_id"], r["listing_id"])
        for r in records(out, "celery.app.trace")
        if r["message"].startswith("Task reviews.release_expired_leases_task[")
    ]
    assert done == [("trace-e1", 77, "listing-e1"), (None, None, None)]


# --- a case through a real web process and a real worker -------------------------------------


def _json_env(tmp_path: Path) -> dict:
    return process_env(
        without=("TRITON_URL", "LLM_URL"),
        SECURE_COOKIES="false",
        LOG_FORMAT="json",
        # No image model: enrichment says so instead of loading one.
        DETECTION_MODEL_CONFIG=str(tmp_path / "no-model.json"),
    )


@pytest.fixture
def json_worker(transactional_db, tmp_path):
    """A Celery worker process with LOG_FORMAT=json; yields the file its output goes to."""
    app.control.purge()
    out = tmp_path / "worker.log"
    proc = celery_worker_start(
        name="json-logs",
        queues="ingest,default,enrich,llm",
        env=_json_env(tmp_path),
        log=out,
        timeout=90,
    )
    yield proc, out
    process_stop(proc)


@pytest.fixture
def json_web(transactional_db, tmp_path):
    """The portal served by Daphne with LOG_FORMAT=json (no access log: that one is Daphne's own
    text); yields its base URL and the file its output goes to."""
    out = tmp_path / "web.log"
    proc, base = daphne_start(env=_json_env(tmp_path), log=out, options=("-v", "0"), timeout=90)
    yield proc, base, out
    process_stop(proc)


class Browserless:
    """A person's HTTP session against the portal (cookies, CSRF), as a browser would hold it."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def log_in(self, username: str, password: str) -> None:
        page = self.opener.open(self.base + "/login/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        self.opener.open(
            urllib.request.Request(
                self.base + "/login/", data=urllib.parse.urlencode(form).encode(), method="POST"
            ),
            timeout=30,
        )
        assert any(c.name == "sessionid" for c in self.jar), "the login did not take"

    def post(self, path: str, body: dict | None = None) -> tuple[int, object]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-CSRFToken": self.cookie("csrftoken")},
        )
        return _send(self.opener, request)


def _send(opener, request) -> tuple[int, object]:
    try:
        with opener.open(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _parsed(path: Path) -> list[dict]:
    """Every line of the file, each of which must be one JSON object."""
    text = path.read_text()
    assert text.endswith("\n"), text[-500:]
    out = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert set(record) >= CORE_KEYS, line
        out.append(record)
    return out


def _wait_for(path: Path, proc: subprocess.Popen, predicate, count: int = 1) -> None:
    """Until `count` lines of the file match."""
    deadline = time.monotonic() + 90
    while sum(1 for line in complete_lines(path) if predicate(json.loads(line))) < count:
        assert proc.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(0.2)


def _finished(task: str, trace_id: str | None):
    def match(r: dict) -> bool:
        return (
            r["logger"] == "celery.app.trace"
            and r["message"].startswith(f"Task {task}[")
            and " succeeded " in r["message"]
            and r["trace_id"] == trace_id
        )

    return match


@pytest.mark.celery_worker
def test_a_case_trace_id_runs_through_the_web_process_and_the_worker(
    json_worker, json_web, service_token, settings
):
    from reviews.cases.tasks import release_expired_leases_task
    from reviews.models import Case

    worker, worker_log = json_worker
    _web, base, web_log = json_web
    trace_id = f"trace-json-{os.getpid()}"
    # The model version is free text in the event contract: a hostile one is logged as it is.
    model_version = '2026.11.1 "x"\n{"trace_id": "forged"}'
    event = f.event(
        score=0.6,  # human review
        seller="seller-json",
        listing="listing-json",
        images=[],
        trace_id=trace_id,
        model_version=model_version,
    )
    ingest = urllib.request.Request(
        base + "/api/v1/detections/",
        data=json.dumps([event]).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Token {service_token}"},
    )
    status, answer = _send(urllib.request.build_opener(), ingest)
    assert (status, answer["accepted"]) == (200, 1), answer
    case = Case.objects.get(trace_id=trace_id)

    # A person decides it through the API, as the review page does.
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS  # what the server checks with
    person = User.objects.create_user(username="mod-json", password="correct horse battery")
    person.groups.set(Group.objects.filter(name=MODERATOR))
    session = Browserless(base)
    session.log_in("mod-json", "correct horse battery")
    status, claimed = session.post("/api/v1/cases/claim-next/")
    assert (status, claimed["id"]) == (200, case.id), claimed
    status, decided = session.post(
        f"/api/v1/cases/{case.id}/decision/",
        {"verdict": "violation", "policy": "firearms", "action": "warn"},
    )
    assert status == 201, decided

    # The confirmed violation's reference task is sent by the web process after the decision
    # commits, and sets no log context itself: the worker logs the case it was sent for.
    _wait_for(worker_log, worker, _finished("detection.reference_add_task", trace_id))
    _wait_for(worker_log, worker, _finished("detection.enrich_step_task", trace_id), count=3)
    # A task sent with nothing in context (from here) logs no case: the last one's was reset.
    release_expired_leases_task.apply_async()
    _wait_for(worker_log, worker, _finished("reviews.release_expired_leases_task", None))

    # Read while both still run: Celery prints its shutdown notice, not a log record.
    web_records, worker_records = _parsed(web_log), _parsed(worker_log)
    known = {
        "trace_id": trace_id,
        "listing_id": "listing-json",
        "seller_id": "seller-json",
        "model_version": model_version,
    }

    def lines(source: list[dict], logger: str, **fields) -> list[str]:
        return [
            r["message"]
            for r in source
            if r["logger"] == logger and all(r[k] == v for k, v in fields.items())
        ]

    event_id = event["event_id"]
    assert lines(web_records, "detection.intake.storage", **known, case_id=None) == [
        f"event {event_id} accepted (api)"
    ]
    assert lines(web_records, "reviews.cases.opening", **known, case_id=case.id) == [
        f"case {case.id} opened: {case.route_reason}"
    ]
    decision_id = decided["id"]
    assert lines(web_records, "reviews.decisions.services", **known, case_id=case.id) == [
        f"decision {decision_id} on case {case.id}: violation, warn (human)"
    ]
    # In the worker: each enrichment step sets the listing's context itself ...
    steps = lines(worker_records, "detection.evidence.enrichment", **known)
    assert sorted(m.split(f" for event {event_id} ")[0] for m in steps) == [
        "enrichment hashes",
        "enrichment heatmaps",
        "enrichment neighbours",
    ]
    # ... and the tasks that set nothing log the context they were sent in.
    sent_in = {
        r["message"].split("[")[0]: (r["trace_id"], r["case_id"])
        for r in worker_records
        if r["logger"] == "celery.app.trace" and " succeeded " in r["message"]
    }
    assert sent_in["Task detection.enrich_event_task"] == (trace_id, case.id)
    assert sent_in["Task detection.reference_add_task"] == (trace_id, case.id)
    assert sent_in["Task reviews.release_expired_leases_task"] == (None, None)
    assert not any(r["trace_id"] == "forged" for r in web_records + worker_records)
