"""The permission matrix, generated from the URL resolver and the websocket routes.

Every route the portal serves must be listed in ROUTES (HTTP) or WS_ROUTES (websockets) with who
may use it; a route that is not listed fails the suite. For every listed route and every method
its view accepts, an anonymous visitor, a signed-in outsider without a role and each role that
is not allowed are refused (pages: a redirect to /login/ when anonymous, else 403; the API: 401
when anonymous, else 403, in the one error shape) and nothing in the database changes; each
allowed role gets past the check.
"""

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import pytest
import yaml
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.admin.sites import site as admin_site
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.permissions import AllowAny, IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.test import APIClient
from rest_framework.views import APIView

from active_learning.labeling.sampling import labeling_draw
from moderation_portal.core import live
from moderation_portal.core.access import (
    ALL_ROLES,
    APPEALS,
    DETECTION_TIER,
    MACHINE_ROLES,
    MARKETPLACE,
    MODERATOR,
    PERSON_ROLES,
    POLICY_ADMIN,
    QA_LEAD,
)
from moderation_portal.core.consumers import CLOSE_NO_ROLE, CLOSE_NOT_SIGNED_IN
from reviews.appeals.intake import appeal_open
from reviews.models import Case, Enforcement, LadderVersion, QaSample
from reviews.policies import ladder as ladder_rules
from reviews.policies import services as ladder_services
from reviews.urls import websocket_urlpatterns
from tests import factories as f
from tests.conftest import api_client_for
from tests.reviews.helpers import open_cases

PUBLIC = "public"
READERS = (MODERATOR, APPEALS, QA_LEAD, POLICY_ADMIN)
LADDER_READERS = (POLICY_ADMIN, QA_LEAD)
MISSING_ID = 987_654_321  # views that fetch by this id 404, but only after the role check
METHODS = ("get", "post", "put", "patch", "delete")
API_METHODS = (*METHODS, "options")


@dataclass(frozen=True)
class Expect:
    who: tuple[str, ...] | str  # the roles that may use the route, or PUBLIC
    body: Callable[["World"], Any] | None = (
        None  # sent with unsafe methods (a form, or JSON for the API)
    )
    query: Callable[["World"], dict] | None = None  # sent with GET


def _decision(w):
    return {"verdict": "no_violation", "action": "none"}


def _reason(w):
    return {"reason": "not mine"}


def _ladder_form(w):
    return {
        f"{code}.{key}": value
        for code, row in w.ladder_v1.thresholds.items()
        for key, value in row.items()
    }


def _ladder_file(w):
    text = ladder_rules.to_yaml(
        thresholds=w.ladder_v1.thresholds, version=None, notes="imported by an outsider"
    )
    return {
        "file": SimpleUploadedFile("ladder.yaml", text.encode(), content_type="application/yaml")
    }


def _appeal(w):
    return _appeal_of(w.sample)


def _appeal_of(sample):
    enforcement = Enforcement.objects.get(decision=sample.decision, action="remove_listing")
    return {
        "appeal_id": "matrix-appeal",
        "enforcement_id": enforcement.pk,
        "seller_id": "matrix-seller",
        "statement": "not a gun",
        "submitted_at": "2026-01-01T00:00:00+00:00",
    }


def _mapping_form(w):
    form: dict = {"territorial_scope": ["DE"]}
    for code, row in w.ladder_v1.statement_mapping["policies"].items():
        form.update({f"{code}.{key}": value for key, value in row.items()})
    return form


def _repeat_form(w):
    form: dict = {}
    for code, row in w.ladder_v1.repeat_rules.items():
        form.update({f"{code}.{key}": str(value) for key, value in row.items()})
    return {**form, "firearms.strike_weight": "3"}


# Route name (as reverse() spells it) -> who may use it. Path converters are filled from World.
ROUTES: dict[str, Expect] = {
    "healthz": Expect(PUBLIC),
    "readyz": Expect(PUBLIC),
    # no role: loopback or the METRICS_TOKEN bearer; refusals in tests/test_metrics.py
    "metrics": Expect(PUBLIC),
    "login": Expect(PUBLIC),
    "logout": Expect(PUBLIC),
    # the API
    "api-detections": Expect((DETECTION_TIER,), body=lambda w: [f.event()]),
    "api-event-schema": Expect(ALL_ROLES),
    "api-schema": Expect(ALL_ROLES),
    "api-cases": Expect(READERS, query=lambda w: {"listing": w.case.listing.external_id}),
    "api-claim-next": Expect((MODERATOR,), body=lambda w: {}),
    "api-case": Expect(READERS),
    "api-decision": Expect((MODERATOR,), body=_decision),
    "api-release": Expect((MODERATOR,)),
    "api-heartbeat": Expect((MODERATOR,)),
    "api-skip": Expect((MODERATOR,), body=_reason),
    "api-escalate": Expect((MODERATOR,), body=_reason),
    "api-statement-of-reasons": Expect(READERS),
    "api-appeals": Expect((MARKETPLACE,), body=_appeal),
    "api-appeal-claim-next": Expect((APPEALS,)),
    "api-appeal": Expect((APPEALS,)),
    "api-seller-strikes": Expect((MODERATOR, APPEALS)),
    "api-appeal-decision": Expect(
        (APPEALS,), body=lambda w: {"outcome": "overturn", "notes": "an outsider's overturn"}
    ),
    "api-enforcement": Expect((POLICY_ADMIN,)),
    "api-enforcement-redeliver": Expect((POLICY_ADMIN,), body=lambda w: {"failed": True}),
    "api-models-compare": Expect(LADDER_READERS, query=lambda w: {"challenger": "2027.01.0"}),
    "api-labeling-claim-next": Expect((MODERATOR,), body=lambda w: {}),
    "api-labeling-answer": Expect((MODERATOR,), body=lambda w: {"answer": "violation"}),
    # pages
    "reviews:home": Expect(READERS),
    "reviews:queues": Expect(READERS),
    "reviews:queues_fragment": Expect(READERS),
    "reviews:queue": Expect(READERS),
    "reviews:queue_fragment": Expect(READERS),
    "reviews:claim_next": Expect((MODERATOR,)),
    "reviews:case": Expect(READERS),
    "reviews:case_evidence": Expect(READERS),
    "reviews:case_status": Expect(READERS),
    "reviews:case_decide": Expect((MODERATOR,), body=_decision),
    "reviews:case_release": Expect((MODERATOR,)),
    "reviews:case_skip": Expect((MODERATOR,), body=_reason),
    "reviews:case_escalate": Expect((MODERATOR,), body=_reason),
    "reviews:listing_image": Expect(READERS),
    "reviews:heatmap_overlay": Expect(READERS),
    "reviews:reference_image": Expect(READERS),
    "reviews:preferences": Expect(
        READERS, body=lambda w: {"blur_images": "", "greyscale_images": "on"}
    ),
    "reviews:seller_bulk": Expect(
        (MODERATOR,),
        body=lambda w: {
            "case": [w.case.id, w.queued.id],
            "confirm": "yes",
            "verdict": "violation",
            "policy": "firearms",
            "action": "remove",
        },
    ),
    "reviews:qa": Expect((QA_LEAD,)),
    "reviews:dashboard": Expect((QA_LEAD, POLICY_ADMIN)),
    "reviews:qa_claim": Expect((QA_LEAD,)),
    "reviews:qa_sample": Expect((QA_LEAD,), body=lambda w: {"outcome": "agree"}),
    "reviews:appeals": Expect((APPEALS,)),
    "reviews:appeal_claim": Expect((APPEALS,)),
    "reviews:appeal": Expect((APPEALS,)),
    "reviews:appeal_decide": Expect(
        (APPEALS,), body=lambda w: {"outcome": "overturn", "notes": "an outsider's overturn"}
    ),
    "reviews:appeal_release": Expect((APPEALS,)),
    "reviews:enforcement": Expect((POLICY_ADMIN,)),
    "reviews:enforcement_redeliver": Expect((POLICY_ADMIN,), body=lambda w: {"failed": "1"}),
    "reviews:enforcement_endpoint_enable": Expect((POLICY_ADMIN,)),
    "reviews:statements_resubmit": Expect((POLICY_ADMIN,), body=lambda w: {"rejected": "1"}),
    "reviews:ladder_statements_save": Expect((POLICY_ADMIN,), body=_mapping_form),
    "reviews:ladder_repeat_save": Expect((POLICY_ADMIN,), body=_repeat_form),
    "reviews:seller": Expect((MODERATOR, APPEALS)),
    "reviews:ladder": Expect(LADDER_READERS),
    "reviews:ladder_draft_start": Expect((POLICY_ADMIN,)),
    "reviews:ladder_draft_save": Expect((POLICY_ADMIN,), body=_ladder_form),
    "reviews:ladder_draft_discard": Expect((POLICY_ADMIN,)),
    "reviews:ladder_draft_export": Expect(LADDER_READERS),
    "reviews:ladder_publish": Expect((POLICY_ADMIN,)),
    "reviews:ladder_import": Expect((POLICY_ADMIN,), body=_ladder_file),
    "reviews:ladder_version": Expect(LADDER_READERS),
    "reviews:ladder_export": Expect(LADDER_READERS),
    "reviews:ladder_activate": Expect((POLICY_ADMIN,)),
    "reviews:models": Expect(LADDER_READERS),
    "active_learning:labeling": Expect((MODERATOR,)),
    "active_learning:labeling_claim": Expect((MODERATOR,)),
    "active_learning:labeling_item": Expect((MODERATOR,)),
    "active_learning:labeling_answer": Expect((MODERATOR,), body=lambda w: {"answer": "violation"}),
    "active_learning:labeling_skip": Expect((MODERATOR,)),
}
# Django's admin is included whole and is staff-only (test_the_admin_is_staff_only).
ADMIN_PREFIX = "admin/"
# Pages that check roles in their body instead of through role_required (so no portal_roles):
# reviews:home redirects readers to the queues and refuses everyone else. Keep this list short.
ROLE_CHECKED_IN_THE_BODY: set[str] = set()

# Websocket route pattern -> who may connect.
WS_ROUTES: dict[str, tuple[str, ...]] = {
    "ws/queues/": PERSON_ROLES,
    "ws/cases/<int:case_id>/": PERSON_ROLES,
}


# --- the resolver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    name: str
    route: str
    callback: Any
    converters: tuple[str, ...]

    @property
    def is_api(self) -> bool:
        cls = getattr(self.callback, "cls", None)
        return isinstance(cls, type) and issubclass(cls, APIView)


def _walk(patterns, prefix="", namespaces=(), converters=()):
    for p in patterns:
        route = prefix + str(p.pattern)
        names = tuple(p.pattern.converters) if hasattr(p.pattern, "converters") else ()
        if isinstance(p, URLResolver):
            if route == ADMIN_PREFIX and p.app_name == "admin":
                yield Found("<admin>", route, None, ())
                continue
            ns = namespaces + ((p.namespace,) if p.namespace else ())
            yield from _walk(p.url_patterns, route, ns, converters + names)
        else:
            assert isinstance(p, URLPattern)
            assert p.name, f"the route {route!r} has no name, so the matrix cannot list it"
            yield Found(":".join((*namespaces, p.name)), route, p.callback, converters + names)


def resolved() -> list[Found]:
    return list(_walk(get_resolver().url_patterns))


def _route(name: str) -> Found:
    return next(r for r in resolved() if r.name == name)


def _permission_classes(callback) -> list[type]:
    return list(callback.initkwargs.get("permission_classes") or callback.cls.permission_classes)


def _roles_admitted_by(permission: type) -> tuple[str, ...] | None:
    """The roles a role_permission(...) class admits, or None when it is not one."""
    if permission.__module__ != "moderation_portal.core.access":
        return None
    return tuple(getattr(permission, "roles", ())) or None


def test_every_route_is_listed_with_who_may_use_it():
    found = {r.name for r in resolved()}
    listed = set(ROUTES) | {"<admin>"}
    assert found - listed == set(), "routes missing from the permission matrix (add them to ROUTES)"
    assert listed - found == set(), "ROUTES lists routes that no longer exist"
    ws = [str(p.pattern) for p in websocket_urlpatterns]
    assert len(ws) == len(set(ws))
    assert set(ws) - set(WS_ROUTES) == set(), "websocket routes missing from WS_ROUTES"
    assert set(WS_ROUTES) - set(ws) == set(), (
        "WS_ROUTES lists websocket routes that no longer exist"
    )


def test_every_page_names_its_roles_and_every_api_view_checks_one():
    for r in resolved():
        if r.callback is None:
            continue
        expect = ROUTES[r.name]
        if r.is_api:
            classes = _permission_classes(r.callback)
            assert classes, r.name
            assert AllowAny not in classes, r.name
            assert IsAuthenticatedOrReadOnly not in classes, r.name
            assert set(classes) - {IsAuthenticated}, f"{r.name}: signed in is not a role"
            admitted = {role for c in classes for role in (_roles_admitted_by(c) or ())}
            assert admitted == set(expect.who), (r.name, admitted)
        elif expect.who == PUBLIC or r.name in ROLE_CHECKED_IN_THE_BODY:
            assert not hasattr(r.callback, "portal_roles"), (
                f"{r.name} is listed as public but checks roles"
            )
        else:
            roles = getattr(r.callback, "portal_roles", None)
            assert roles is not None, f"{r.name} is neither public nor behind role_required"
            assert set(roles) == set(expect.who), (r.name, roles)
    assert {name for name, e in ROUTES.items() if e.who == PUBLIC} == {
        "healthz",
        "readyz",
        "metrics",
        "login",
        "logout",
    }


# --- the world the requests are made in ------------------------------------------------------


@dataclass
class World:
    case: Case  # claimed by the colleague moderator2
    queued: Case  # of the same seller, waiting in the queue
    sample: QaSample
    ladder_v1: LadderVersion  # published, not active
    appeal_id: int = 0  # an appeal of the automatic removal, waiting
    item_id: int = 0  # a labeling item of the day's draw, waiting
    users: dict[str, User] = field(default_factory=dict)
    tier_token: str = ""
    marketplace_token: str = ""

    def kwargs(self, converters) -> dict:
        values = {
            "case_id": self.case.id,
            "image_id": self.case.listing.images.get().id,
            "heatmap_id": MISSING_ID,
            "reference_id": MISSING_ID,
            "seller_id": self.case.listing.seller_id,
            "slug": "all",
            "sample_id": self.sample.id,
            "number": self.ladder_v1.version,
            "decision_id": self.sample.decision_id,
            "appeal_id": self.appeal_id,
            "item_id": self.item_id,
        }
        missing = set(converters) - set(values)
        assert not missing, f"World.kwargs has no value for the path converters {missing}"
        return {name: values[name] for name in converters}


@pytest.fixture
def world(moderator, moderator2, appeals_staff, qa_lead, policy_admin, outsider, service_token):
    ladder_v1 = LadderVersion.objects.get(is_active=True)
    thresholds = {code: {**row, "qa_rate": 1.0} for code, row in ladder_v1.thresholds.items()}
    ladder_services.ladder_draft_save(user=policy_admin, thresholds=thresholds)
    ladder_services.ladder_publish(user=policy_admin)  # v2 active, v1 could be activated again
    case, queued, auto = open_cases(0.62, 0.6, 0.97, seller="matrix-seller")
    sample = QaSample.objects.get(decision__case=auto)
    assert api_client_for(moderator2).post("/api/v1/cases/claim-next/").json()["id"] == case.id
    ladder_services.ladder_draft_save(
        user=policy_admin, thresholds=thresholds, notes="a draft nobody else may touch"
    )
    tier = User.objects.get(username="svc-detection-tier")
    out = StringIO()
    call_command("create_service_token", "marketplace", "--role", MARKETPLACE, stdout=out)
    marketplace = User.objects.get(username="svc-marketplace")
    opened = appeal_open(payload={**_appeal_of(sample), "appeal_id": "world-appeal"}, user=None)
    assert opened.status == 201, opened
    open_cases(0.4, seller="matrix-seller")  # closed in the monitor band: the labeling pool
    (item,) = labeling_draw(day=timezone.localdate(), budget=1).items.all()
    users = {
        MARKETPLACE: marketplace,
        MODERATOR: moderator,
        APPEALS: appeals_staff,
        QA_LEAD: qa_lead,
        POLICY_ADMIN: policy_admin,
        DETECTION_TIER: tier,
        "outsider": outsider,
    }
    return World(
        case=case,
        queued=queued,
        sample=sample,
        ladder_v1=ladder_v1,
        users=users,
        tier_token=service_token,
        marketplace_token=out.getvalue().strip(),
        appeal_id=opened.appeal.pk,
        item_id=item.pk,
    )


SNAPSHOT_APPS = ("core", "detection", "llm_verify", "reviews", "active_learning", "admin")
NOT_SNAPSHOT = {"detection.ServiceToken": {"last_used_at"}, "auth.User": {"last_login"}}


def snapshot() -> dict:
    """Every row of the portal's tables (and the admin log and users), field by field."""
    out = {}
    models = [m for m in apps.get_models() if m._meta.app_label in SNAPSHOT_APPS] + [User]
    for model in models:
        label = model._meta.label
        fields = [
            fd.attname
            for fd in model._meta.concrete_fields
            if fd.attname not in NOT_SNAPSHOT.get(label, set())
        ]
        out[label] = list(model.objects.order_by("pk").values_list(*fields))
    return out


def _client(w: World, who: str | None, *, api: bool):
    if api:
        client = APIClient()
        if who == DETECTION_TIER:
            client.credentials(HTTP_AUTHORIZATION=f"Token {w.tier_token}")
        elif who == MARKETPLACE:
            client.credentials(HTTP_AUTHORIZATION=f"Token {w.marketplace_token}")
        elif who is not None:
            client.force_login(w.users[who])
        return client
    client = Client()
    if who is not None:
        client.force_login(w.users[who])
    return client


def _request(client, method: str, url: str, expect: Expect, w: World, *, api: bool):
    call = getattr(client, method)
    if method == "get":
        return call(url, expect.query(w) if expect.query else {})
    if method == "options":
        return call(url)
    body = expect.body(w) if expect.body else None
    if api:
        return call(url, body, format="json") if body is not None else call(url)
    return call(url, body or {})


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/login/")


def _assert_api_refusal(response, status: int, what):
    assert response.status_code == status, (what, response.status_code)
    if response["Content-Type"].startswith("application/vnd.oai.openapi;"):
        body = yaml.safe_load(
            response.content
        )  # the schema view renders YAML unless asked for JSON
    else:
        body = response.json()
    assert set(body) == {"error"}, (what, body)
    assert set(body["error"]) == {"code", "message"}, (what, body)
    assert isinstance(body["error"]["code"], str), (what, body)
    assert isinstance(body["error"]["message"], str), (what, body)


def _url(w: World, r: Found) -> str:
    return reverse(r.name, kwargs=w.kwargs(r.converters))


def _methods(w: World, r: Found, expect: Expect) -> list[str]:
    """The methods the view accepts: an API view's handlers; for pages, those an anonymous
    visitor is not answered 405 for (the portal's require_* decorators come first)."""
    if r.is_api:
        return [m for m in API_METHODS if hasattr(r.callback.cls, m)]
    url = _url(w, r)
    return [
        m for m in METHODS if _request(Client(), m, url, expect, w, api=False).status_code != 405
    ]


PROTECTED = sorted(name for name, e in ROUTES.items() if e.who != PUBLIC)


@pytest.mark.django_db
@pytest.mark.parametrize("name", PROTECTED)
def test_everyone_else_is_refused_and_nothing_changes(name, world):
    w, expect, r = world, ROUTES[name], _route(name)
    url = _url(w, r)
    refused = [who for who in (*ALL_ROLES, "outsider") if who not in expect.who]
    before = snapshot()
    methods = _methods(w, r, expect)
    assert methods, f"{name}: no method is accepted"
    for method in methods:
        anonymous = _request(_client(w, None, api=r.is_api), method, url, expect, w, api=r.is_api)
        if r.is_api:
            _assert_api_refusal(anonymous, 401, (method, url, "anonymous"))
        else:
            assert _is_login_redirect(anonymous), (method, url, "anonymous", anonymous.status_code)
        for who in refused:
            response = _request(_client(w, who, api=r.is_api), method, url, expect, w, api=r.is_api)
            if r.is_api:
                _assert_api_refusal(response, 403, (method, url, who))
            else:
                assert response.status_code == 403, (method, url, who, response.status_code)
    assert snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("name", PROTECTED)
def test_the_roles_allowed_get_past_the_check(name, world):
    w, expect, r = world, ROUTES[name], _route(name)
    url = _url(w, r)
    methods = _methods(w, r, expect)
    for who in expect.who:
        for method in methods:
            response = _request(_client(w, who, api=r.is_api), method, url, expect, w, api=r.is_api)
            assert response.status_code not in (401, 403), (
                method,
                url,
                who,
                response.status_code,
            )
            assert not _is_login_redirect(response), (method, url, who, response.status_code)


@pytest.mark.django_db
def test_public_routes_need_no_sign_in(world):
    client = Client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/login/").status_code == 200
    assert _is_login_redirect(client.post("/logout/"))
    client.force_login(world.users[MODERATOR])
    assert client.get("/queues/").status_code == 200
    assert _is_login_redirect(client.post("/logout/"))
    assert _is_login_redirect(client.get("/queues/"))  # signed out for real
    assert Client().get("/readyz").status_code in (200, 503)


@pytest.mark.django_db
def test_the_admin_is_staff_only(world):
    urls = ["/admin/"] + [
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/{suffix}"
        for model in admin_site._registry
        for suffix in ("", "add/", "1/change/", "1/delete/")
    ]
    before = snapshot()
    for who in (None, "outsider", *PERSON_ROLES, *MACHINE_ROLES):
        client = Client()
        if who is not None:
            client.force_login(world.users[who])
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302, (url, who)
            assert response["Location"].startswith("/admin/login/"), (url, who)
        response = client.post(f"/admin/reviews/case/{world.case.id}/delete/", {"post": "yes"})
        assert response.status_code == 302, who
        assert response["Location"].startswith("/admin/login/"), who
    assert snapshot() == before


# --- checks that go beyond the role ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role_fixture", ["appeals_staff", "qa_lead", "policy_admin"])
def test_readers_who_are_not_moderators_may_read_a_case_but_not_claim_or_decide(
    role_fixture, request, moderator2
):
    user = request.getfixturevalue(role_fixture)
    (case,) = open_cases(0.6)
    open_cases(0.7)
    api_client_for(moderator2).post("/api/v1/cases/claim-next/")
    before = snapshot()
    api = api_client_for(user)
    assert api.post("/api/v1/cases/claim-next/").status_code == 403
    assert (
        api.post(
            f"/api/v1/cases/{case.id}/decision/",
            {"verdict": "no_violation", "action": "none"},
            format="json",
        ).status_code
        == 403
    )
    assert snapshot() == before
    body = api.get(f"/api/v1/cases/{case.id}/").json()
    assert body["id"] == case.id


@pytest.mark.django_db
def test_the_detection_tier_cannot_use_people_endpoints(tier_client):
    (case,) = open_cases(0.6)
    before = snapshot()
    assert tier_client.post("/api/v1/cases/claim-next/").status_code == 403
    assert tier_client.get(f"/api/v1/cases/{case.id}/").status_code == 403
    assert (
        tier_client.post(
            f"/api/v1/cases/{case.id}/decision/",
            {"verdict": "no_violation", "action": "none"},
            format="json",
        ).status_code
        == 403
    )
    assert snapshot() == before
    assert tier_client.get("/api/v1/schema/detection-event.json").status_code == 200


@pytest.mark.django_db
def test_a_revoked_or_wrong_token_is_refused(tier_client, service_token):
    before = snapshot()
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    _assert_api_refusal(
        wrong.post("/api/v1/detections/", [f.event()], format="json"), 401, "wrong token"
    )
    assert snapshot() == before


@pytest.mark.django_db
def test_health_endpoints():
    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    body = client.get("/readyz").json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


@pytest.mark.django_db
def test_readyz_says_when_the_broker_is_down(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True


# --- websockets ------------------------------------------------------------------------------

ORIGIN = (b"origin", b"http://127.0.0.1")


def _ws_path(pattern: str, case_id: int) -> str:
    return "/" + pattern.replace("<int:case_id>", str(case_id))


def run_async(fn, *args):
    """Run a coroutine function in a thread of its own: a browser test earlier in the session may
    leave an event loop running in this one (Playwright's sync API), where asgiref refuses."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn(*args))).result()


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _communicator(path: str, cookie: bytes | None = None) -> WebsocketCommunicator:
    from moderation_portal.asgi import application

    headers = [ORIGIN] + ([(b"cookie", cookie)] if cookie else [])
    return WebsocketCommunicator(application, path, headers=headers)


async def _connect(path: str, cookie: bytes | None) -> tuple[bool, int | None]:
    communicator = _communicator(path, cookie)
    connected, code = await communicator.connect(timeout=5)
    if connected:
        await communicator.disconnect()
        return True, None
    return False, code


@pytest.mark.django_db(transaction=True)
def test_websockets_admit_people_with_a_portal_role_only(
    moderator, appeals_staff, qa_lead, policy_admin, outsider, service_token
):
    (case,) = open_cases(0.6)
    cookies = {
        "anonymous": None,
        "outsider": _session_cookie(outsider),
        DETECTION_TIER: _session_cookie(User.objects.get(username="svc-detection-tier")),
        MODERATOR: _session_cookie(moderator),
        APPEALS: _session_cookie(appeals_staff),
        QA_LEAD: _session_cookie(qa_lead),
        POLICY_ADMIN: _session_cookie(policy_admin),
    }
    for pattern, roles in WS_ROUTES.items():
        path = _ws_path(pattern, case.id)
        for who, cookie in cookies.items():
            outcome = run_async(_connect, path, cookie)
            if who == "anonymous":
                assert outcome == (False, CLOSE_NOT_SIGNED_IN), (path, who)
            elif who in roles:
                assert outcome == (True, None), (path, who)
            else:
                assert outcome == (False, CLOSE_NO_ROLE), (path, who, outcome)


@pytest.mark.django_db(transaction=True)
def test_a_moderators_websockets_hear_what_changed(moderator):
    (case,) = open_cases(0.6)
    cookie = _session_cookie(moderator)

    async def heard(communicator, expected: dict) -> bool:
        # Redis is shared with other test runs, whose hints may arrive too; each is {"changed": ...}
        for _ in range(20):
            message = await communicator.receive_json_from(timeout=5)
            assert set(message) == {"changed"}, message
            if message == expected:
                return True
        return False

    async def listen():
        queues = _communicator("/ws/queues/", cookie)
        case_page = _communicator(f"/ws/cases/{case.id}/", cookie)
        assert (await queues.connect(timeout=5))[0]
        assert (await case_page.connect(timeout=5))[0]
        live.notify_queues_changed()
        assert await heard(queues, {"changed": "queues"})
        live.notify_case_changed(case.id, "x")
        assert await heard(case_page, {"changed": "x"})
        await queues.disconnect()
        await case_page.disconnect()

    run_async(listen)


@pytest.mark.django_db(transaction=True)
def test_a_websocket_from_another_origin_is_refused(moderator):
    from moderation_portal.asgi import application

    communicator = WebsocketCommunicator(
        application,
        "/ws/queues/",
        headers=[(b"origin", b"https://evil.example"), (b"cookie", _session_cookie(moderator))],
    )
    connected, _ = run_async(lambda: communicator.connect(timeout=5))
    assert not connected
