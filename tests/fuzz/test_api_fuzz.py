"""The whole API fuzzed from its own OpenAPI schema (Schemathesis, property-based), in process
through the portal's real WSGI stack on PostgreSQL, as every kind of caller: each role with
valid credentials, a logged-in person without a role, a revoked token, a malformed token and
nobody at all.

For every operation in `GET /api/v1/schema/`, Schemathesis generates requests that fit the
schema (positive) and requests that break it (negative: wrong types, missing fields, values out
of range), some against ids that exist. Every answer must be:
- never a 5xx;
- documented: its status code is in the schema, its content type and body match what the
  schema says for that code;
- a refusal (4xx) in the one error shape, `{"error": {"code", "message"[, "details"]}}`;
- for invalid input, a refusal (schema-breaking data is never accepted);
and every caller gets through to exactly the operations its role allows (read from each view's
permission classes), a refused caller being refused whatever it sends.

Bounded: a handful of examples per operation, mode and caller (`FUZZ_EXAMPLES`), no shrinking,
no example database, so a run takes a fixed, small amount of work.
"""

import json
import os
import secrets
from dataclasses import dataclass, field
from io import StringIO
from urllib.parse import unquote

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from django.urls import Resolver404, resolve
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi import checks as openapi_checks

from detection.models import ServiceToken
from moderation_portal.core.access import (
    APPEALS,
    DETECTION_TIER,
    MARKETPLACE,
    MODERATOR,
    POLICY_ADMIN,
    QA_LEAD,
)
from reviews.appeals import intake as appeal_intake
from reviews.cases.claims import case_claim_next
from reviews.enforcement.models import Enforcement
from tests.reviews.helpers import open_cases

# examples per operation and generation mode, for a caller the operation admits
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
# examples that show a caller is refused at the door (and refused again with broken input)
PROBE_EXAMPLES = 2
# existing objects each operation with an id in its path is also sent
PINNED_IDS = 2
PASSWORD = "correct horse battery staple"

CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]


@dataclass
class Caller:
    name: str
    role: str | None = None
    headers: dict = field(default_factory=dict)
    cookies: dict = field(default_factory=dict)
    # whether a request may get past authentication at all
    authenticated: bool = True


def _error_shape(response) -> list[str]:
    """What is wrong with a refusal's body, against the one error shape."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return [f"not JSON: {response.content[:200]!r}"]
    if not isinstance(body, dict) or set(body) != {"error"}:
        return [f"top level is not exactly {{'error'}}: {str(body)[:200]}"]
    error = body["error"]
    if not isinstance(error, dict):
        return ["'error' is not an object"]
    problems = []
    if not {"code", "message"} <= set(error) <= {"code", "message", "details"}:
        problems.append(f"error keys {sorted(error)}")
    if not isinstance(error.get("code"), str) or not error.get("code"):
        problems.append("code is not a non-empty string")
    if not isinstance(error.get("message"), str) or not error.get("message"):
        problems.append("message is not a non-empty string")
    return problems


def _routed(case) -> bool:
    """Whether the request's path names a route (a path that names none is a 404 for anyone)."""
    try:
        resolve(unquote(case.formatted_path))
    except Resolver404:
        return False
    return True


def _error_code(response) -> str | None:
    try:
        return json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _refusal(answer: tuple[int, str | None], caller: Caller) -> bool:
    """Whether a refused caller's answer to broken input is still a refusal: 401 where the
    generator left the credentials out, 403, 404 for a path no route matches."""
    status, _code = answer
    return status in (401, 403, 404)


def _breakable(operation) -> bool:
    """Whether the operation takes input that can be sent wrong: a body, a query, or a path
    parameter that is not free text (every path segment is a valid string)."""
    raw = operation.definition.raw
    parameters = raw.get("parameters", [])
    return (
        "requestBody" in raw
        or any(p["in"] == "query" for p in parameters)
        or any(p["in"] == "path" and p["schema"].get("type") != "string" for p in parameters)
    )


@pytest.fixture
def wsgi_app():
    """The portal's WSGI handler, called in process. As Django's test client does, requests do
    not close the test's database connection (it holds the test's transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _person(username: str, *roles: str) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD)
    user.groups.set(Group.objects.filter(name__in=roles))
    return user


def _session(name: str, *roles: str) -> Caller:
    """A person logged in through a session, sending the CSRF token as the pages' scripts do."""
    client = Client()
    client.force_login(_person(f"fuzz-{name}", *roles))
    csrf = secrets.token_hex(16)  # an unmasked 32-character secret, as Django accepts
    return Caller(
        name=name,
        role=roles[0] if roles else None,
        headers={"X-CSRFToken": csrf},
        cookies={"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf},
    )


def _token_caller(name: str, role: str) -> Caller:
    out = StringIO()
    call_command("create_service_token", f"fuzz-{name}", "--role", role, stdout=out)
    token = out.getvalue().strip()
    return Caller(name=name, role=role, headers={"Authorization": f"Token {token}"})


def _refused(name: str, authorization: str | None = None) -> Caller:
    headers = {"Authorization": authorization} if authorization else {}
    return Caller(name=name, headers=headers, authenticated=False)


@pytest.fixture
def world(db):
    """Callers of every kind, and objects for the ids in paths to find: a case under the
    moderator's claim, queued cases, an automatic removal with an open appeal."""
    callers = {
        "moderator": _session("moderator", MODERATOR),
        "appeals": _session("appeals", APPEALS),
        "qa_lead": _session("qa_lead", QA_LEAD),
        "policy_admin": _session("policy_admin", POLICY_ADMIN),
        "detection_tier": _token_caller("detection_tier", DETECTION_TIER),
        "marketplace": _token_caller("marketplace", MARKETPLACE),
        "no_role": _session("no_role"),
        "anonymous": _refused("anonymous"),
        "bad_token": _refused("bad_token", "Token mpt_not-a-token"),
        "malformed_token": _refused("malformed_token", "Token a b c"),
    }
    revoked = _token_caller("revoked", DETECTION_TIER)
    ServiceToken.objects.filter(name="fuzz-revoked").update(revoked_at=timezone.now())
    callers["revoked_token"] = _refused("revoked_token", revoked.headers["Authorization"])
    queued = open_cases(0.8, 0.75, 0.7, seller="fuzz-seller")
    claimed = case_claim_next(user=User.objects.get(username="fuzz-moderator"), queue=None)
    (auto,) = open_cases(0.97, seller="fuzz-seller")
    removal = Enforcement.objects.get(decision__case=auto, action="remove_listing")
    answer = appeal_intake.appeal_open(
        payload={
            "appeal_id": "fuzz-appeal",
            "enforcement_id": removal.pk,
            "seller_id": "fuzz-seller",
            "statement": "I sell replicas only.",
            "submitted_at": timezone.now().isoformat(),
        },
        user=None,
    )
    assert answer.status == 201, answer
    ids = {
        "case_id": [claimed.pk, next(c.pk for c in queued if c.pk != claimed.pk), auto.pk],
        "decision_id": [removal.decision_id],
        "appeal_id": [answer.appeal.pk],
        "seller_id": ["fuzz-seller"],
    }
    return callers, ids


def _schema(callers, app) -> schemathesis.BaseSchema:
    """The schema as the portal serves it."""
    return schemathesis.openapi.from_wsgi(
        "/api/v1/schema/",
        app,
        headers={"Accept": "application/json", **callers["detection_tier"].headers},
    )


def _exercise(operation, caller, app, mode, failures, examples, path_parameters=None) -> set:
    """Run `examples` generated requests; returns the (status, error code) pairs answered."""
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    statuses: set[tuple[int, str | None]] = set()

    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(case=strategy)
    def run(case):
        response = case.call(app=app, headers=dict(caller.headers), cookies=dict(caller.cookies))
        statuses.add((response.status_code, _error_code(response)))
        where = f"{caller.name} {mode.value} {case.method} {case.formatted_path}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.content[:300]!r}")
            return
        if 400 <= response.status_code < 500:
            problems = _error_shape(response)
            if problems:
                failures.append(f"{where}: {response.status_code} not the error shape: {problems}")
        if not caller.authenticated and response.status_code != 401 and _routed(case):
            failures.append(f"{where}: {response.status_code} without valid credentials")
        checks = CHECKS if mode == schemathesis.GenerationMode.NEGATIVE else CHECKS[:3]
        try:
            case.validate_response(response, checks=checks)
        except BaseExceptionGroup as group:  # a FailureGroup: the checks that failed
            for failure in group.exceptions:
                failures.append(
                    f"{where}: {response.status_code} {failure.title}: {failure.message[:300]}"
                    f" | body {response.content[:200]!r}"
                )

    try:
        run()
    except Unsatisfiable:  # every input it can break is a string that anything fits
        assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    return statuses


def _roles_admitted(operation, ids) -> set[str]:
    """The roles the view behind the operation admits (its permission classes say)."""
    path = operation.path
    for name in (p.name for p in operation.path_parameters):
        path = path.replace("{" + name + "}", str(ids.get(name, [1])[0]))
    view = resolve(path).func.cls
    return {role for permission in view.permission_classes for role in permission.roles}


CALLERS = [
    "moderator",
    "appeals",
    "qa_lead",
    "policy_admin",
    "detection_tier",
    "marketplace",
    "no_role",
    "anonymous",
    "bad_token",
    "malformed_token",
    "revoked_token",
]


@pytest.mark.parametrize("caller_name", CALLERS)
def test_every_operation_answers_as_documented(caller_name, world, wsgi_app):
    callers, ids = world
    caller = callers[caller_name]
    schema = _schema(callers, wsgi_app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    admitted, expected = set(), set()
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    for operation in operations:
        if caller.role in _roles_admitted(operation, ids):
            expected.add(operation.label)
        probe = _exercise(operation, caller, wsgi_app, positive, failures, PROBE_EXAMPLES)
        takes_input = _breakable(operation)
        if {status for status, _ in probe} <= {401, 403}:
            # refused at the door: whatever else it is sent, it is refused
            if takes_input:
                again = _exercise(operation, caller, wsgi_app, negative, failures, PROBE_EXAMPLES)
                odd = {answer for answer in again if not _refusal(answer, caller)}
                if odd:
                    failures.append(f"{caller.name} {operation.label}: refused, then {odd}")
            continue
        admitted.add(operation.label)
        _exercise(operation, caller, wsgi_app, positive, failures, EXAMPLES)
        if takes_input:
            _exercise(operation, caller, wsgi_app, negative, failures, EXAMPLES)
        names = [p.name for p in operation.path_parameters]
        if len(names) == 1 and names[0] in ids:
            for value in ids[names[0]][:PINNED_IDS]:
                _exercise(
                    operation,
                    caller,
                    wsgi_app,
                    positive,
                    failures,
                    EXAMPLES,
                    path_parameters={names[0]: value},
                )
    distinct = sorted(set(failures))
    assert not distinct, f"{len(distinct)} failures:\n" + "\n".join(distinct[:40])
    # the callers got exactly as far as their roles allow: no further, and not less
    assert admitted == expected
