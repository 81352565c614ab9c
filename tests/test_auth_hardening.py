"""Hostile input at the door: password guessing, session fixation, cross-site requests and
websockets opened by people who do not belong.

Logins go through the real login form (and the admin's); the throttle's counts live in the real
Redis cache, and one test reads a lock made by a Daphne process from this one. The websockets
are opened by a real client (aiohttp) against a real Daphne process.
"""

import asyncio
import concurrent.futures
import copy
import logging
import re
import time
from io import StringIO

import aiohttp
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from moderation_portal.core import live
from moderation_portal.core.login_throttle import login_throttle_reset
from reviews.models import Case, Decision
from tests.processes import daphne_start, free_port, process_env, process_stop
from tests.reviews.helpers import open_cases

PASSWORD = "correct horse battery staple"
USERNAMES = ["mod-ana", "mod-ben", "outsider-fay", "root"] + [f"guess-{i}" for i in range(12)]
ADDRESSES = [
    "127.0.0.1",
    "2001:db8:1:2::/64",
    "2001:db8:1:3::/64",
    *(f"198.51.100.{i}" for i in range(1, 30)),
    *(f"203.0.113.{i}" for i in range(1, 10)),
]
LOCKED_MESSAGE = b"Too many failed logins."


REDIS_CACHES = copy.deepcopy(django_settings.CACHES)


def _reset() -> None:
    with override_settings(CACHES=REDIS_CACHES):  # also where a test pointed the cache elsewhere
        for username in USERNAMES:
            login_throttle_reset(username=username)
        for address in ADDRESSES:
            login_throttle_reset(address=address)


@pytest.fixture(autouse=True)
def _throttle_clean():
    """The counts live in Redis, beyond the test database: start and end with none."""
    _reset()
    yield
    _reset()


def login(username: str, password: str, *, address: str = "127.0.0.1", **headers) -> Client:
    client = Client(REMOTE_ADDR=address)
    client.last = client.post("/login/", {"username": username, "password": password}, **headers)
    return client


def signed_in(client: Client) -> bool:
    return client.get("/queues/").status_code == 200


def scrape() -> dict[tuple[str, frozenset], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def moved(before, after, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def csrf_token(html: bytes) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1).decode()


# --- login throttling ----------------------------------------------------------------------


@pytest.mark.django_db
def test_five_failures_lock_the_account_even_against_the_right_password(moderator):
    before = scrape()
    for i in range(5):  # each from another address: the account's count, not an address's
        attempt = login(moderator.username, f"guess {i}", address=f"198.51.100.{i + 1}")
        assert attempt.last.status_code == 200
        assert b"did not match" in attempt.last.content
    locked = login(moderator.username, PASSWORD, address="198.51.100.9")
    assert locked.last.status_code == 429
    assert LOCKED_MESSAGE in locked.last.content
    assert b"Try again in 15 minutes." in locked.last.content
    assert 890 <= int(locked.last["Retry-After"]) <= 900
    assert not signed_in(locked)
    moderator.refresh_from_db()
    assert moderator.last_login is None
    # the username as typed, case aside, is the account
    assert login("MOD-ANA", PASSWORD, address="198.51.100.10").last.status_code == 429
    after = scrape()
    assert moved(before, after, "portal_login_failures_total") == 5
    assert moved(before, after, "portal_login_throttled_total", scope="account") == 2
    assert moved(before, after, "portal_login_throttled_total", scope="address") == 0


@pytest.mark.django_db
def test_a_successful_login_clears_the_accounts_count(moderator):
    for round_ in range(2):
        for i in range(4):
            assert login(moderator.username, f"guess {round_}{i}").last.status_code == 200
        good = login(moderator.username, PASSWORD)
        assert good.last.status_code == 302, round_
        assert signed_in(good)


@pytest.mark.django_db
def test_one_address_guessing_many_accounts_is_locked_whatever_it_forwards(moderator, settings):
    settings.LOGIN_THROTTLE_ADDRESS_FAILURES = 8
    before = scrape()
    for i in range(8):  # one guess per account, each claiming another origin
        attempt = login(
            f"guess-{i}", "password1", address="203.0.113.5", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}"
        )
        assert attempt.last.status_code == 200, i
    locked = login(moderator.username, PASSWORD, address="203.0.113.5")
    assert locked.last.status_code == 429
    assert not signed_in(locked)
    # the account itself is not locked: from elsewhere its owner gets in
    elsewhere = login(moderator.username, PASSWORD, address="203.0.113.6")
    assert elsewhere.last.status_code == 302
    assert moved(before, scrape(), "portal_login_throttled_total", scope="address") == 1


@pytest.mark.django_db
def test_ipv6_clients_are_counted_by_their_64(moderator, settings):
    settings.LOGIN_THROTTLE_ADDRESS_FAILURES = 3
    for i, address in enumerate(["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"]):
        assert login(f"guess-{i}", "password1", address=address).last.status_code == 200
    assert login(moderator.username, PASSWORD, address="2001:db8:1:2::c").last.status_code == 429
    assert login(moderator.username, PASSWORD, address="2001:db8:1:3::a").last.status_code == 302


@pytest.mark.django_db
def test_the_lock_ends_with_its_window(moderator, settings):
    settings.LOGIN_THROTTLE_FAILURES = 2
    settings.LOGIN_THROTTLE_WINDOW_SECONDS = 2
    for i in range(2):
        login(moderator.username, f"guess {i}")
    locked = login(moderator.username, PASSWORD)
    assert locked.last.status_code == 429
    wait = int(locked.last["Retry-After"])
    assert 1 <= wait <= 2
    # wait out the lock as a person would, by the answer's own Retry-After
    time.sleep(wait + 0.2)
    assert login(moderator.username, PASSWORD).last.status_code == 302


@pytest.mark.django_db
def test_the_admin_login_is_throttled_by_the_same_counts():
    User.objects.create_superuser("root", password=PASSWORD)
    before = Client(REMOTE_ADDR="198.51.100.19")
    response = before.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    assert response["Location"] == "/admin/"  # the right password gets in before the guessing
    admin = Client(REMOTE_ADDR="198.51.100.20")
    for i in range(5):
        response = admin.post("/admin/login/", {"username": "root", "password": f"guess {i}"})
        assert response.status_code == 200
    response = admin.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 200  # the form again, not the redirect into the admin
    assert admin.get("/admin/").status_code == 302  # still signed out
    # and the portal's own page sees the same lock
    assert login("root", PASSWORD, address="198.51.100.21").last.status_code == 429


@pytest.mark.django_db
def test_the_throttle_works_on_the_embedded_modes_local_cache(moderator, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.LOGIN_THROTTLE_FAILURES = 3
    for i in range(3):
        assert login(moderator.username, f"guess {i}").last.status_code == 200
    assert login(moderator.username, PASSWORD).last.status_code == 429
    with override_settings(CACHES=REDIS_CACHES):  # kept in this process only, not in Redis
        assert login(moderator.username, PASSWORD).last.status_code == 302


@pytest.mark.django_db
def test_an_operator_can_lift_a_lock_early(moderator):
    for i in range(5):
        login(moderator.username, f"guess {i}", address="2001:db8:1:2::7")
    assert login(moderator.username, PASSWORD).last.status_code == 429
    out = StringIO()
    call_command("login_unlock", moderator.username, "--address", "2001:db8:1:2::9", stdout=out)
    assert out.getvalue() == "unlocked account 'mod-ana' and address 2001:db8:1:2::/64\n"
    assert login(moderator.username, PASSWORD).last.status_code == 302
    with pytest.raises(CommandError, match="not an IP address"):
        call_command("login_unlock", "--address", "10.0.0.300")


@pytest.mark.django_db
def test_an_unreachable_cache_lets_people_log_in_unthrottled(moderator, settings, caplog):
    # Redis's port with nothing listening: what a stopped Redis looks like to the web process.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    for i in range(6):
        assert login(moderator.username, f"guess {i}").last.status_code == 200
    assert login(moderator.username, PASSWORD).last.status_code == 302
    assert any("the cache is unreachable" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_a_failed_login_is_logged_without_its_password(moderator, caplog):
    caplog.set_level(logging.WARNING, logger="moderation_portal.core.login_throttle")
    login(moderator.username, "tr0ub4dor&3 secret", address="198.51.100.7")
    lines = [r.getMessage() for r in caplog.records]
    assert "login failed: account 'mod-ana' from 198.51.100.7" in lines
    assert not any("tr0ub4dor" in line for line in lines)


# --- session fixation and logout -----------------------------------------------------------


@pytest.mark.django_db
def test_logging_in_replaces_a_session_planted_beforehand(moderator):
    client = Client()
    planted = client.session  # a real, stored session, as an attacker would hand a victim
    planted["planted"] = True
    planted.save()
    planted_key = planted.session_key
    response = client.post("/login/", {"username": moderator.username, "password": PASSWORD})
    assert response.status_code == 302
    key = client.cookies["sessionid"].value
    assert key != planted_key
    assert not Session.objects.filter(session_key=planted_key).exists()
    assert Session.objects.get(session_key=key).get_decoded()["_auth_user_id"] == str(moderator.id)
    # the planted key does not sign anyone in
    attacker = Client()
    attacker.cookies["sessionid"] = planted_key
    assert attacker.get("/queues/").status_code == 302

    # a made-up key is not adopted either
    client = Client()
    client.cookies["sessionid"] = "a" * 32
    assert client.post("/login/", {"username": moderator.username, "password": PASSWORD})[
        "Location"
    ] == ("/queues/")
    assert client.cookies["sessionid"].value != "a" * 32


@pytest.mark.django_db
def test_logout_ends_the_session_for_good(moderator):
    client = login(moderator.username, PASSWORD)
    key = client.cookies["sessionid"].value
    assert signed_in(client)
    assert client.get("/logout/").status_code == 405  # a link or an image cannot sign anyone out
    assert signed_in(client)
    assert client.post("/logout/")["Location"] == "/login/"
    assert not Session.objects.filter(session_key=key).exists()
    assert not signed_in(client)
    replay = Client()
    replay.cookies["sessionid"] = key
    assert replay.get("/queues/").status_code == 302


# --- CSRF ----------------------------------------------------------------------------------


def _csrf_login(username: str) -> tuple[Client, str]:
    """Logs in through the form with its token; returns the client and its page token."""
    client = Client(enforce_csrf_checks=True)
    token = csrf_token(client.get("/login/").content)
    response = client.post(
        "/login/", {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    return client, csrf_token(client.get("/preferences/").content)


@pytest.mark.django_db
def test_the_login_form_needs_its_csrf_token(moderator):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": moderator.username, "password": PASSWORD})
    assert response.status_code == 403
    assert "sessionid" not in client.cookies
    # a token from another visitor's page does not match this one's cookie
    stranger = csrf_token(Client().get("/login/").content)
    client.get("/login/")
    response = client.post(
        "/login/",
        {"username": moderator.username, "password": PASSWORD, "csrfmiddlewaretoken": stranger},
    )
    assert response.status_code == 403
    moderator.refresh_from_db()
    assert moderator.last_login is None
    _csrf_login(moderator.username)  # with its own token it works
    moderator.refresh_from_db()
    assert moderator.last_login is not None


@pytest.mark.django_db
def test_a_decision_without_the_csrf_token_is_refused_and_changes_nothing(moderator):
    first, _ = open_cases(0.69, 0.6)
    client, token = _csrf_login(moderator.username)
    assert client.post("/queues/all/claim/").status_code == 403  # nothing claimed
    first.refresh_from_db()
    assert (first.state, first.claimed_by) == (Case.State.QUEUED, None)
    response = client.post("/queues/all/claim/", {"csrfmiddlewaretoken": token})
    assert response["Location"] == f"/cases/{first.id}/?queue=all"
    decision = {"verdict": "violation", "policy": "firearms", "action": "remove", "queue": "all"}
    assert client.post(f"/cases/{first.id}/decide/", decision).status_code == 403
    assert client.post("/logout/").status_code == 403
    first.refresh_from_db()
    assert (first.state, first.claimed_by) == (Case.State.CLAIMED, moderator)
    assert not Decision.objects.filter(case=first).exists()
    response = client.post(f"/cases/{first.id}/decide/", {**decision, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Decision.objects.get(case=first).decided_by == moderator


@pytest.mark.django_db
def test_the_session_signed_api_needs_the_csrf_header(moderator):
    (case,) = open_cases(0.6)
    client = APIClient(enforce_csrf_checks=True)
    client.login(username=moderator.username, password=PASSWORD)
    client.get("/preferences/")  # a page with a form: it sets the CSRF cookie
    response = client.post("/api/v1/cases/claim-next/", {}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert response.json()["error"]["message"].startswith("CSRF Failed")
    case.refresh_from_db()
    assert (case.state, case.claimed_by) == (Case.State.QUEUED, None)
    response = client.post(
        "/api/v1/cases/claim-next/",
        {},
        format="json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert response.status_code == 200
    assert response.json()["id"] == case.id


# --- a real Daphne: websockets and a lock shared between processes ---------------------------


def run_async(fn, *args):
    """A coroutine function in a thread of its own (an event loop may run in this one)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn(*args))).result()


@pytest.fixture
def real_passwords(settings):
    """The Daphne process checks passwords with Django's default hasher, not the tests' fast one:
    give these people passwords it can check (and this process too)."""

    def give(*users: User) -> None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
        for user in users:
            user.set_password(PASSWORD)
            user.save(update_fields=["password"])

    return give


@pytest.fixture(scope="module")
def portal(django_db_setup, tmp_path_factory):
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    proc, base = daphne_start(env=process_env(), log=log)
    yield base
    process_stop(proc)


async def _http_login(session: aiohttp.ClientSession, base: str, username: str, password: str):
    async with session.get(f"{base}/login/") as response:
        token = csrf_token((await response.text()).encode())
    async with session.post(
        f"{base}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        allow_redirects=False,
    ) as response:
        return response.status


def _cookie(session: aiohttp.ClientSession, name: str) -> str:
    return next(c.value for c in session.cookie_jar if c.key == name)


async def _ws_refused(base: str, path: str, headers: dict[str, str]) -> int | None:
    """The handshake's HTTP status when refused; None when the socket opened."""
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(base.replace("http", "ws") + path, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return None


async def _hears(ws, expected: dict) -> bool:
    # Redis's channel layer is shared with the rest of the run: other hints may come first
    for _ in range(20):
        message = await ws.receive_json(timeout=10)
        assert set(message) == {"changed"}, message
        if message == expected:
            return True
    return False


@pytest.mark.django_db(transaction=True)
def test_websockets_refuse_outsiders_on_a_real_server(portal, real_passwords, moderator, outsider):
    real_passwords(moderator)
    stranger = Client()
    stranger.force_login(outsider)  # signed in for real, only without a role
    (case,) = open_cases(0.6)
    routes = {
        "/ws/queues/": (live.notify_queues_changed, {"changed": "queues"}),
        f"/ws/cases/{case.id}/": (
            lambda: live.notify_case_changed(case.id, "claim"),
            {"changed": "claim"},
        ),
    }
    origin = {"Origin": portal}

    async def check():
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as member:
            assert await _http_login(member, portal, moderator.username, PASSWORD) == 302
            own = {"Cookie": f"sessionid={_cookie(member, 'sessionid')}"}
            roleless = {"Cookie": f"sessionid={stranger.cookies['sessionid'].value}"}
            for path, (notify, expected) in routes.items():
                assert await _ws_refused(portal, path, origin) == 403, (path, "anonymous")
                assert await _ws_refused(portal, path, {**origin, **roleless}) == 403, path
                evil = {"Origin": "https://evil.example", **own}
                assert await _ws_refused(portal, path, evil) == 403, (path, "origin")
                assert await _ws_refused(portal, path, own) == 403, (path, "no origin")
                assert await _ws_refused(portal, path, {"Origin": "null", **own}) == 403, path
                # the moderator, from the portal's own page, is let in and hears what changed
                ws = await member.ws_connect(portal.replace("http", "ws") + path, headers=origin)
                await loop.run_in_executor(None, notify)
                assert await _hears(ws, expected), path
                await ws.close()
            # after logging out, the old session opens nothing
            async with member.get(f"{portal}/preferences/") as response:
                token = csrf_token((await response.text()).encode())
            async with member.post(
                f"{portal}/logout/", data={"csrfmiddlewaretoken": token}, allow_redirects=False
            ) as response:
                assert response.status == 302
            for path in routes:
                assert await _ws_refused(portal, path, {**origin, **own}) == 403, path

    run_async(check)


@pytest.mark.django_db(transaction=True)
def test_failures_on_one_web_process_lock_the_account_on_another(portal, moderator2):
    async def guess():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            return [
                await _http_login(session, portal, moderator2.username, f"guess {i}")
                for i in range(5)
            ]

    assert run_async(guess) == [200] * 5
    # this process, like a second node, reads the same counts from Redis
    locked = login(moderator2.username, PASSWORD, address="198.51.100.25")
    assert locked.last.status_code == 429
    login_throttle_reset(username=moderator2.username)
    assert login(moderator2.username, PASSWORD, address="198.51.100.25").last.status_code == 302
