"""The LLM endpoint failing: hanging (it takes the request and never answers) and answering
garbage. The portal's real verification (the openai client, its timeouts, the deadline and the
circuit breaker in Redis) runs against an OpenAI-protocol server on a socket
(tests/llm_verify/conftest.py); a case it cannot verify goes to a person, never to an action."""

from __future__ import annotations

import json
import threading

import pytest

from llm_verify import services as llm_services
from llm_verify.client import BREAKER_OPEN_ERROR
from reviews.cases.verification import llm_run_for_case
from reviews.models import Case, Decision
from tests.conftest import api_client_for
from tests.faults.conftest import wait_until
from tests.llm_verify.conftest import Reply, llm_serving
from tests.reviews.helpers import open_cases
from tests.reviews.test_llm_routing import DESCRIPTION, TITLE, verdict

pytestmark = pytest.mark.django_db

READ_TIMEOUT, DEADLINE = 0.4, 1.2  # seconds
HANG = Reply(delay_s=3600)  # the request is read, and never answered
FAILURES, COOLDOWN = 2, 1.0  # the breaker opens after 2 failures, for 1 s


def pending_case(capture) -> Case:
    """A case in the LLM-verifiable band, its verification not started (nothing enqueued)."""
    with capture(execute=False):
        (case,) = open_cases(0.8, title=TITLE, description=DESCRIPTION)
    assert (case.route, case.state, case.llm_state) == ("llm_verify", "queued", "pending")
    return case


def with_a_human(case: Case) -> bool:
    """Queued for people, with no decision taken for it."""
    case.refresh_from_db()
    return case.state == "queued" and not Decision.objects.filter(case=case).exists()


def endpoint(settings, **overrides):
    """The fake endpoint, with short timeouts and breaker settings (then `overrides`)."""
    short = {
        "LLM_READ_TIMEOUT_SECONDS": READ_TIMEOUT,
        "LLM_DEADLINE_SECONDS": DEADLINE,
        "LLM_BREAKER_FAILURES": FAILURES,
        "LLM_BREAKER_COOLDOWN_SECONDS": COOLDOWN,
    }
    return llm_serving(settings, **{**short, **overrides})


def fresh_breaker():
    """The breaker of the endpoint configured now, closed (its state lives in Redis)."""
    breaker = llm_services.client().breaker
    breaker.store.close(breaker.name)
    return breaker


def test_a_hanging_endpoint_sends_the_case_to_a_person_within_the_deadline(
    settings, django_capture_on_commit_callbacks, moderator
):
    with endpoint(settings, LLM_BREAKER_FAILURES=50) as server:
        server.script(HANG)
        fresh_breaker()
        case = pending_case(django_capture_on_commit_callbacks)
        result = llm_run_for_case(case_id=case.id)
    assert (result.status, result.decision) == ("unavailable", "")
    assert result.error.startswith("timed out")
    assert server.request_count == result.attempts >= 1
    # The deadline bounds the whole call, retries included; the last request's read timeout is
    # cut to what is left of it.
    assert result.latency_ms <= (DEADLINE + READ_TIMEOUT) * 1000
    assert with_a_human(case)
    assert (case.llm_state, case.llm_verdict_id) == ("unavailable", result.id)
    claimed = api_client_for(moderator).post("/api/v1/cases/claim-next/")
    assert (claimed.status_code, claimed.json()["id"]) == (200, case.id)


def test_the_breaker_opens_on_a_hanging_endpoint_and_closes_when_it_recovers(
    settings, django_capture_on_commit_callbacks
):
    with endpoint(settings) as server:
        server.script(HANG)
        breaker = fresh_breaker()
        cases = [pending_case(django_capture_on_commit_callbacks) for _ in range(6)]

        timed_out = [llm_run_for_case(case_id=c.id) for c in cases[:FAILURES]]
        assert [(r.status, r.error.startswith("timed out")) for r in timed_out] == [
            ("unavailable", True)
        ] * FAILURES
        assert breaker.state() == "open"
        asked = server.request_count
        refused = llm_run_for_case(case_id=cases[2].id)
        assert (refused.status, refused.error, refused.attempts) == (
            "unavailable",
            BREAKER_OPEN_ERROR,
            0,
        )
        assert server.request_count == asked  # refused without asking the endpoint

        # After the cool-down one probe goes out; the endpoint still hangs, so it opens again.
        wait_until(lambda: breaker.state() == "half_open", timeout=10, what="the cool-down")
        probe = llm_run_for_case(case_id=cases[3].id)
        assert (probe.status, probe.error.startswith("timed out")) == ("unavailable", True)
        assert server.request_count > asked
        assert breaker.state() == "open"

        server.script(Reply.content(verdict()))  # the endpoint recovers
        wait_until(lambda: breaker.state() == "half_open", timeout=10, what="the cool-down")
        recovered = [llm_run_for_case(case_id=c.id) for c in cases[4:]]
        assert [r.status for r in recovered] == ["ok", "ok"]
        assert breaker.state() == "closed"

    for case in cases[:4]:
        assert with_a_human(case)
        assert case.llm_state == "unavailable"
    for case in cases[4:]:
        case.refresh_from_db()
        assert (case.state, case.llm_state) == ("closed", "done")
        assert Decision.objects.get(case=case).source == "llm_verified"


COMPLETION = json.dumps(Reply.content(verdict()).body).encode()
GARBAGE = {
    # what the endpoint sends: the endpoint is broken, so these count towards the breaker
    "an HTML error page": (Reply(raw=b"<html><body>502 Bad Gateway</body></html>"), "error"),
    "a truncated completion": (Reply(raw=COMPLETION[: len(COMPLETION) // 2]), "error"),
    # what the model says: the endpoint works, the answers do not, so the breaker stays closed
    "prose instead of a verdict": (
        Reply.content("This listing clearly breaks the firearms policy."),
        "schema_failed",
    ),
    "JSON of the wrong schema": (
        Reply.content({"verdict": "guilty", "score": "very high"}),
        "schema_failed",
    ),
    "a verdict cut off mid-way": (
        Reply.content(json.dumps(verdict())[:60]),
        "schema_failed",
    ),
}


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_from_the_endpoint_sends_the_case_to_a_person(
    settings, django_capture_on_commit_callbacks, garbage
):
    reply, status = GARBAGE[garbage]
    with endpoint(settings) as server:
        server.script(reply)
        breaker = fresh_breaker()
        cases = [pending_case(django_capture_on_commit_callbacks) for _ in range(FAILURES)]
        results = [llm_run_for_case(case_id=c.id) for c in cases]
        breaker_after = breaker.state()
    assert [r.status for r in results] == [status] * FAILURES
    for case, result in zip(cases, results, strict=True):
        assert with_a_human(case)
        assert (case.llm_state, case.llm_verdict_id, result.decision) == ("failed", result.id, "")
    if status == "error":
        assert results[0].error.startswith("malformed response")
        assert breaker_after == "open"
    else:
        # asked once more with the problems named, then given up on
        assert results[0].attempts == 2
        assert results[0].problems
        assert breaker_after == "closed"
    assert server.request_count == sum(r.attempts for r in results)


@pytest.mark.django_db(transaction=True)
def test_a_verification_taken_over_as_stale_records_nothing_when_it_ends(
    settings, django_capture_on_commit_callbacks
):
    """A verification that looked dead (a worker stalled past the stale bound) and was taken
    over by another worker: when it ends after all, its verdict is kept as a row but not
    applied, so the case has one verdict and at most one decision."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from llm_verify.models import LlmVerdict
    from moderation_portal.core.audit import AuditAction
    from moderation_portal.core.models import AuditEvent

    # the first question waits out a 3 s read timeout: time enough for the take-over
    with endpoint(
        settings, LLM_BREAKER_FAILURES=50, LLM_READ_TIMEOUT_SECONDS=3.0, LLM_DEADLINE_SECONDS=4.0
    ) as server:
        server.script(HANG, Reply.content(verdict()))
        fresh_breaker()
        case = pending_case(django_capture_on_commit_callbacks)
        stalled: list = []

        def first_worker():
            try:
                stalled.append(llm_run_for_case(case_id=case.id))
            finally:
                connection.close()

        thread = threading.Thread(target=first_worker)
        thread.start()
        wait_until(lambda: server.request_count == 1, timeout=10, what="the first question")
        # the first run now looks as a dead worker's would
        Case.objects.filter(id=case.id).update(llm_started_at=timezone.now() - timedelta(hours=1))
        taken_over = llm_run_for_case(case_id=case.id)
        thread.join(10)
    assert taken_over.status == "ok"
    (late,) = stalled  # timed out, or answered on a retry after the take-over
    assert late.id != taken_over.id
    case.refresh_from_db()
    assert (case.state, case.llm_state, case.llm_verdict_id) == ("closed", "done", taken_over.id)
    assert Decision.objects.get(case=case).llm_verdict_id == taken_over.id
    assert LlmVerdict.objects.count() == 2
    recorded = AuditEvent.objects.filter(
        action=AuditAction.LLM_VERDICT_RECORDED, object_id=str(case.id)
    )
    assert [e.data["verdict_id"] for e in recorded] == [taken_over.id]
