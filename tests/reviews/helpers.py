import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

from reviews.cases.intake import detections_ingest as events_ingest
from reviews.models import Case
from tests import factories as f


def open_cases(*scores, policy="firearms", **kw) -> list[Case]:
    """Ingest one event per score (the real path) and return their cases in order."""
    events = [f.event(score=s, policy=policy, **kw) for s in scores]
    outcomes = events_ingest(events=events, source="api")
    assert all(o.status == "accepted" for o in outcomes), outcomes
    return [Case.objects.get(detection_event__event_id=e["event_id"]) for e in events]


@dataclass
class WebhookRequest:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    verified: bool  # did standardwebhooks accept it with the receiver's secret

    @property
    def data(self) -> dict:
        return json.loads(self.body)["data"]


def webhook_verified(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the independent `standardwebhooks` package accepts the request's signature."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


Answer = Callable[[dict[str, str], bytes], tuple[int, dict[str, str]]]


@contextmanager
def webhook_server(path: str, answer: Answer) -> Iterator[str]:
    """An HTTP receiver on 127.0.0.1, a thread per request: each POST's headers (names
    lower-cased) and body go to `answer`, whose status and headers it sends back with an empty
    body. Yields its URL, ending in `path`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, extra = answer({k.lower(): v for k, v in self.headers.items()}, body)
            try:
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up waiting for the answer

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Receiver:
    """A webhook receiver's record of every request, verified against `secret`; it answers each
    with the next scripted (status, headers), then with `status`, and 401 to one that does not
    verify."""

    secret: str
    status: int = 204
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[WebhookRequest] = field(default_factory=list)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        verified = webhook_verified(self.secret, body, headers)
        self.requests.append(WebhookRequest(headers, body, verified))
        status, extra = self.script.pop(0) if self.script else (self.status, {})
        return (status if verified else 401), extra


@contextmanager
def receiver_serving(secret: str, path: str) -> Iterator[Receiver]:
    """A `Receiver` listening on 127.0.0.1 at `path` while the block runs."""
    state = Receiver(secret)
    with webhook_server(path, state.answer) as url:
        state.url = url
        yield state
