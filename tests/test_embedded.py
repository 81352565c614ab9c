"""The embedded default end to end: SQLite, eager Celery, in-memory channel layer, no services.

Runs the portal as `make demo` does (a separate process with no DATABASE_URL or REDIS_URL) and
drives it over HTTP the way the detection tier and a moderator would.
"""

import http.cookiejar
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests import factories as f
from tests.embedded_mode import embedded_env, embedded_manage

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.embedded


class Http:
    """A small HTTP client with cookies (standard library only)."""

    def __init__(self, base: str, headers: dict | None = None):
        self.base, self.headers = base, headers or {}
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect
        )

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def request(self, method, path, *, json_body=None, form=None, headers=None):
        data, hdrs = None, {**self.headers, **(headers or {})}
        if json_body is not None:
            data, hdrs["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif form is not None:
            data, hdrs["Content-Type"] = (
                urllib.parse.urlencode(form).encode(),
                "application/x-www-form-urlencoded",
            )
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs, method=method)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def embedded_portal(tmp_path):
    env = embedded_env(tmp_path / "var")
    manage = embedded_manage(env)

    manage("migrate", "--no-input", "-v", "0")
    manage(
        "create_user",
        "mod",
        "--role",
        "moderator",
        "--password-stdin",
        stdin="embedded mode passphrase\n",
    )
    token = manage("create_service_token", "tier").strip()
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if Http(base).request("GET", "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        server.kill()
        pytest.fail((tmp_path / "server.log").read_text())
    yield base, token, tmp_path
    server.terminate()
    server.wait(15)


def test_embedded_mode_from_ingest_to_decision(embedded_portal):
    base, token, tmp_path = embedded_portal
    assert (tmp_path / "var" / "portal.sqlite3").stat().st_size != 0
    status, ready = Http(base).request("GET", "/readyz")
    ready = json.loads(ready)
    assert ready["checks"]["database"]["vendor"] == "sqlite"
    assert ready["checks"]["broker"]["mode"].startswith("eager")

    tier = Http(base, {"Authorization": f"Token {token}"})
    batch = [
        f.event(score=0.6, listing="emb-1"),
        f.event(score=0.99),
        f.mutate(f.event(), "listing.title", ""),
    ]
    status, body = tier.request("POST", "/api/v1/detections/", json_body=batch)
    assert status == 200, body
    assert [r["status"] for r in json.loads(body)["results"]] == [
        "accepted",
        "accepted",
        "rejected",
    ]

    person = Http(base)
    _, login_page = person.request("GET", "/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    status, _ = person.request(
        "POST",
        "/login/",
        form={
            "username": "mod",
            "password": "embedded mode passphrase",
            "csrfmiddlewaretoken": csrf,
        },
    )
    assert status == 302
    headers = {"X-CSRFToken": person.cookie("csrftoken"), "Referer": base + "/"}
    status, claimed = person.request(
        "POST", "/api/v1/cases/claim-next/", headers=headers, json_body={}
    )
    assert status == 200, claimed
    claimed = json.loads(claimed)
    assert claimed["listing"]["id"] == "emb-1"
    case_id = claimed["id"]
    assert person.request("GET", f"/cases/{case_id}/")[0] == 200
    status, decided = person.request(
        "POST",
        f"/api/v1/cases/{case_id}/decision/",
        headers=headers,
        json_body={
            "verdict": "violation",
            "policy": "firearms",
            "action": "warn",
            "notes": "first offence",
        },
    )
    assert status == 201, decided
    _, cases = person.request("GET", "/api/v1/cases/?listing=emb-1")
    case = json.loads(cases)[0]
    assert case["state"] == "decided"
    assert case["decisions"][0]["action"] == "warn"
    assert (
        person.request("POST", "/api/v1/cases/claim-next/", headers=headers, json_body={})[0] == 204
    )
