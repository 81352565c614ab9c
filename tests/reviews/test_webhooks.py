"""The marketplace webhook client against a real HTTP receiver on 127.0.0.1.

The receiver checks every request with the independent ``standardwebhooks`` package (the
reference implementation of the Standard Webhooks spec), not with the code under test.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from reviews.enforcement import webhooks
from reviews.enforcement.webhooks import (
    MAX_BODY_BYTES,
    DeliveryResult,
    Secret,
    deliver,
    parse_secrets,
    retry_after_seconds,
    sign,
)

SECRET_A = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
SECRET_C = "whsec_" + base64.b64encode(bytes(range(200, 224))).decode()
BODY = json.dumps(
    {"type": "enforcement.action", "data": {"enforcement_id": 41, "action": "remove_listing"}}
).encode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: dict[str, bool]  # receiver secret name -> did standardwebhooks accept it


@dataclass
class Receiver:
    """What the receiver knows (its secrets) and answers; what it received."""

    secrets: dict[str, str]
    status: int = 204
    answer_headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = dict(self.headers.items())
            verified = {}
            for name, secret in receiver.secrets.items():
                try:
                    Webhook(secret).verify(body, headers)
                    verified[name] = True
                except WebhookVerificationError:
                    verified[name] = False
            receiver.requests.append(Received(self.path, headers, body, verified))
            if receiver.hang:
                receiver.release.wait(10)
                return
            if not any(verified.values()):
                self.send_response(401)
                self.end_headers()
                return
            self.send_response(receiver.status)
            for key, value in receiver.answer_headers.items():
                self.send_header(key, value)
            self.end_headers()

        def log_message(self, format, *args):
            pass

    return Handler


@pytest.fixture
def receiver():
    state = Receiver(secrets={"A": SECRET_A})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/enforcement"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _deliver(url, secrets=(SECRET_A,), body=BODY, webhook_id="enf_41", **kwargs):
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("read_timeout", 2.0)
    return deliver(
        url=url,
        secrets=[Secret.parse(s) for s in secrets],
        webhook_id=webhook_id,
        body=body,
        **kwargs,
    )


# --- secrets ---------------------------------------------------------------------------------


def test_secret_parses_whsec_base64_and_hides_the_key():
    secret = Secret.parse(SECRET_A)
    assert secret.key == bytes(range(32))
    assert repr(secret) == "Secret()"
    # Unpadded base64 is accepted too (the reference implementation accepts it).
    assert Secret.parse(SECRET_C.rstrip("=")).key == bytes(range(200, 224))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "webhook secret must start with 'whsec_'"),
        ("WHSEC_" + SECRET_A[6:], "webhook secret must start with 'whsec_'"),
        ("whsec_not*base64!", "webhook secret is not valid base64 after 'whsec_'"),
        ("whsec_kéy", "webhook secret is not valid base64 after 'whsec_'"),
        ("whsec_", "webhook secret key is 0 bytes; Standard Webhooks needs 24 to 64"),
        (
            "whsec_" + base64.b64encode(b"short").decode(),
            "webhook secret key is 5 bytes; Standard Webhooks needs 24 to 64",
        ),
        (
            "whsec_" + base64.b64encode(bytes(65)).decode(),
            "webhook secret key is 65 bytes; Standard Webhooks needs 24 to 64",
        ),
    ],
)
def test_secret_rejects_malformed_values_without_echoing_them(value, message):
    with pytest.raises(ValueError, match=r"^webhook secret") as raised:
        Secret.parse(value)
    assert str(raised.value) == message
    if value.removeprefix("whsec_"):
        assert value.removeprefix("whsec_") not in str(raised.value)


def test_parse_secrets_reads_several_for_rotation():
    secrets = parse_secrets(f" {SECRET_A}  {SECRET_B},{SECRET_C} ")
    assert [s.key for s in secrets] == [
        bytes(range(32)),
        bytes(range(100, 132)),
        bytes(range(200, 224)),
    ]
    with pytest.raises(ValueError, match=r"^no webhook secret given$"):
        parse_secrets("  ")


# --- signing ---------------------------------------------------------------------------------


def test_sign_matches_the_reference_implementation():
    headers = sign(
        secrets=[Secret.parse(SECRET_A), Secret.parse(SECRET_B)],
        webhook_id="enf_41",
        timestamp=1_700_000_000,
        body=BODY,
    )
    moment = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    expected = [Webhook(s).sign("enf_41", moment, BODY.decode()) for s in (SECRET_A, SECRET_B)]
    assert headers == {
        "webhook-id": "enf_41",
        "webhook-timestamp": "1700000000",
        "webhook-signature": " ".join(expected),
        "content-type": "application/json",
    }
    assert expected[0] != expected[1]


def test_sign_refuses_no_secrets_and_a_bad_id():
    with pytest.raises(ValueError, match=r"^at least one webhook secret is needed to sign$"):
        sign(secrets=[], webhook_id="enf_41", timestamp=1, body=BODY)
    with pytest.raises(ValueError, match=r"^webhook_id must be non-empty"):
        sign(secrets=[Secret.parse(SECRET_A)], webhook_id="enf 41", timestamp=1, body=BODY)


def test_a_tampered_body_does_not_verify():
    now = int(time.time())
    headers = sign(secrets=[Secret.parse(SECRET_A)], webhook_id="enf_41", timestamp=now, body=BODY)
    assert Webhook(SECRET_A).verify(BODY, headers) == json.loads(BODY)
    tampered = BODY.replace(b"remove_listing", b"restore_listing")
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(SECRET_A).verify(tampered, headers)


# --- delivery --------------------------------------------------------------------------------


def test_a_good_delivery_verifies_at_the_receiver(receiver):
    result = _deliver(receiver.url)

    assert result == DeliveryResult(
        status_code=204,
        delivered=True,
        gone=False,
        retry_after_seconds=None,
        error=None,
        permanent=False,
        duration_ms=result.duration_ms,
    )
    assert 0 <= result.duration_ms < 2000
    [request] = receiver.requests
    assert request.path == "/hooks/enforcement"
    assert request.body == BODY
    assert request.verified == {"A": True}
    assert request.headers["webhook-id"] == "enf_41"
    assert request.headers["content-type"] == "application/json"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5


def test_a_body_tampered_on_the_way_is_refused(receiver, monkeypatch):
    # The signature covers other bytes than the ones that arrive, as after tampering in transit.
    real_sign = webhooks.sign

    def sign_other_bytes(**kwargs):
        return real_sign(**{**kwargs, "body": kwargs["body"].replace(b"41", b"42")})

    monkeypatch.setattr(webhooks, "sign", sign_other_bytes)
    result = _deliver(receiver.url)

    assert (result.status_code, result.delivered, result.error) == (401, False, "HTTP 401")
    assert (result.gone, result.permanent, result.retry_after_seconds) == (False, False, None)
    [request] = receiver.requests
    assert request.body == BODY
    assert request.verified == {"A": False}


def test_a_wrong_secret_is_refused(receiver):
    result = _deliver(receiver.url, secrets=(SECRET_C,))

    assert (result.status_code, result.delivered, result.error) == (401, False, "HTTP 401")
    assert (result.gone, result.permanent) == (False, False)
    assert receiver.requests[0].verified == {"A": False}
    assert SECRET_C not in repr(result)


def test_two_secrets_each_verify_on_their_own(receiver):
    receiver.secrets = {"A": SECRET_A, "B": SECRET_B, "C": SECRET_C}
    result = _deliver(receiver.url, secrets=(SECRET_A, SECRET_B))

    assert (result.status_code, result.delivered) == (204, True)
    [request] = receiver.requests
    assert request.verified == {"A": True, "B": True, "C": False}
    entries = request.headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    # Each entry on its own is the one signature of its secret.
    for secret, entry in zip((SECRET_A, SECRET_B), entries, strict=True):
        alone = {**request.headers, "webhook-signature": entry}
        Webhook(secret).verify(request.body, alone)
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET_C).verify(request.body, alone)


def test_each_attempt_is_signed_afresh_with_the_same_id(receiver):
    t0 = int(time.time())
    first = _deliver(receiver.url, webhook_id="enf_7", now=lambda: t0 + 0.9)
    second = _deliver(receiver.url, webhook_id="enf_7", now=lambda: t0 + 30.2)

    assert (first.delivered, second.delivered) == (True, True)
    one, two = receiver.requests
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == "enf_7"
    assert one.headers["webhook-timestamp"] == str(t0)
    assert two.headers["webhook-timestamp"] == str(t0 + 30)
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    assert one.verified == two.verified == {"A": True}


def test_410_is_gone_and_permanent(receiver):
    receiver.status = 410
    result = _deliver(receiver.url)

    assert result == DeliveryResult(
        status_code=410,
        delivered=False,
        gone=True,
        retry_after_seconds=None,
        error="HTTP 410",
        permanent=True,
        duration_ms=result.duration_ms,
    )


def test_503_with_retry_after_seconds(receiver):
    receiver.status = 503
    receiver.answer_headers = {"Retry-After": "7"}
    result = _deliver(receiver.url)

    assert result == DeliveryResult(
        status_code=503,
        delivered=False,
        gone=False,
        retry_after_seconds=7,
        error="HTTP 503",
        permanent=False,
        duration_ms=result.duration_ms,
    )


def test_503_with_retry_after_as_an_http_date(receiver):
    t0 = int(time.time())
    receiver.status = 503
    receiver.answer_headers = {"Retry-After": formatdate(t0 + 120, usegmt=True)}
    result = _deliver(receiver.url, now=lambda: float(t0))

    assert (result.status_code, result.retry_after_seconds, result.permanent) == (503, 120, False)


def test_an_unparseable_retry_after_is_none(receiver):
    receiver.status = 429
    receiver.answer_headers = {"Retry-After": "soon"}
    result = _deliver(receiver.url)

    assert (result.status_code, result.retry_after_seconds, result.error) == (429, None, "HTTP 429")
    assert (result.delivered, result.permanent) == (False, False)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("7", 7),
        (" 7 ", 7),
        ("0", 0),
        ("-3", 0),
        ("7.5", None),
        ("", None),
        ("soon", None),
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120),  # 1_700_000_120
        ("Tue, 14 Nov 2023 22:15:20 -0000", 120),
        ("Tue, 14 Nov 2023 22:11:20 GMT", 0),  # in the past
        ("Tue, 14 Nov 2023 22:13:20.5 GMT", None),
    ],
)
def test_retry_after_parsing(value, seconds):
    assert retry_after_seconds(value, now=1_700_000_000.0) == seconds


def test_a_closed_port_is_unreachable_not_permanent():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _deliver(f"http://127.0.0.1:{port}/hooks", connect_timeout=1.0)

    assert result == DeliveryResult(
        status_code=None,
        delivered=False,
        gone=False,
        retry_after_seconds=None,
        error="transport error (ConnectError)",
        permanent=False,
        duration_ms=result.duration_ms,
    )


def test_a_receiver_that_never_answers_times_out_not_permanent(receiver):
    receiver.hang = True
    result = _deliver(receiver.url, read_timeout=0.3)

    assert result == DeliveryResult(
        status_code=None,
        delivered=False,
        gone=False,
        retry_after_seconds=None,
        error="timeout (ReadTimeout)",
        permanent=False,
        duration_ms=result.duration_ms,
    )
    assert 300 <= result.duration_ms < 3000
    assert len(receiver.requests) == 1


def test_a_body_over_20_kb_is_refused_before_sending(receiver):
    prefix, suffix = b'{"pad": "', b'"}'
    at_limit = prefix + b"x" * (MAX_BODY_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(at_limit) == MAX_BODY_BYTES == 20_000
    assert _deliver(receiver.url, body=at_limit).delivered is True

    over = at_limit[:-2] + b'x"}'
    with pytest.raises(ValueError, match=r"^webhook body is 20001 bytes; the limit is 20000$"):
        _deliver(receiver.url, body=over)
    assert [len(r.body) for r in receiver.requests] == [20_000]


def test_a_bad_url_is_a_caller_error():
    with pytest.raises(ValueError, match=r"^webhook url must be http:// or https://$"):
        _deliver("ftp://127.0.0.1/hooks")
