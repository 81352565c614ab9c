"""The EU DSA Transparency Database's statement API: one batch submission, Django-free.

``post_statements`` POSTs ``{"statements": [...]}`` (1 to 100) to ``{base}/api/v1/statements``
with ``Authorization: Bearer <token>`` and reads the answer into a ``BatchAnswer`` saying, per
``puid``, what became of each statement:

- 201: every statement is filed; the answer carries each one's ``uuid``.
- 422 with ``errors.existing_puids`` (or a single statement's ``existing``): those puids are
  filed already (done); nothing else in the batch was stored.
- 422 with ``errors.statement_<i>``: those statements are invalid (their field errors); nothing
  in the batch was stored.
- any other 422: the whole batch is refused with the message.
- 5xx, 429, timeouts and connection failures: retry later (``Retry-After`` honoured); 401/403:
  the token is wrong, retry later and say so.

The token never appears in an error or a result.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from reviews.enforcement.webhooks import retry_after_seconds

MAX_BATCH = 100  # the Transparency Database's limit per call
MAX_ANSWER_BYTES = 5_000_000
_STATEMENT_KEY = re.compile(r"statement_([0-9]+)")


@dataclass
class BatchAnswer:
    status_code: int | None  # None: no HTTP answer
    duration_ms: int
    filed: dict[str, str] = field(default_factory=dict)  # puid -> uuid, newly filed
    existing: set[str] = field(default_factory=set)  # puids the database had already
    invalid: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # puid -> errors
    refused: str | None = None  # a 422 refusing the batch as a whole
    retry: bool = False  # nothing was decided: try again later
    retry_after_seconds: int | None = None
    error: str | None = None  # short, for operators


def _errors(value: object) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {"statement": [str(value)[:500]]}
    return {
        str(k)[:100]: [str(m)[:500] for m in (v if isinstance(v, list) else [v])][:10]
        for k, v in list(value.items())[:50]
    }


def read_answer(
    status: int, body: Any, puids: Sequence[str], *, duration_ms: int, retry_after: int | None
) -> BatchAnswer:
    """What a Transparency Database answer means for each statement of the batch."""
    answer = BatchAnswer(status_code=status, duration_ms=duration_ms)
    body = body if isinstance(body, dict) else {}
    if 200 <= status < 300:  # 201 Created; any 2xx means the batch was stored
        by_puid = {
            str(s.get("puid")): str(s.get("uuid", ""))
            for s in body.get("statements", [])
            if isinstance(s, dict)
        }
        answer.filed = {puid: by_puid.get(puid, "") for puid in puids}
        return answer
    if status == 422:
        errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
        assert isinstance(errors, dict)
        existing = errors.get("existing_puids")
        single = body.get("existing")
        if isinstance(existing, list) or isinstance(single, dict):
            named = {str(p) for p in existing} if isinstance(existing, list) else set()
            if isinstance(single, dict) and single.get("puid"):
                named.add(str(single["puid"]))
            answer.existing = named & set(puids)
            if answer.existing:
                return answer
        for key, value in errors.items():
            match = _STATEMENT_KEY.fullmatch(str(key))
            if match and int(match.group(1)) < len(puids):
                answer.invalid[puids[int(match.group(1))]] = _errors(value)
        if answer.invalid:
            return answer
        if len(puids) == 1 and errors:
            answer.invalid[puids[0]] = _errors(errors)
            return answer
        answer.refused = str(body.get("message") or errors or "422 without a reason")[:2000]
        answer.error = f"HTTP 422: {answer.refused[:300]}"
        return answer
    answer.retry = True
    answer.retry_after_seconds = retry_after
    if status in (401, 403):
        answer.error = f"HTTP {status}: the Transparency Database refused the token"
    else:
        answer.error = f"HTTP {status}"
    return answer


def post_statements(
    *, base_url: str, token: str, statements: Sequence[dict[str, Any]], timeout: float
) -> BatchAnswer:
    """Submit one batch; never raises for what the network or the server does."""
    if not 1 <= len(statements) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} statements, not {len(statements)}")
    if not base_url.startswith(("https://", "http://")):
        raise ValueError("the Transparency Database URL must be http:// or https://")
    puids = [str(s["puid"]) for s in statements]
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        with httpx2.Client(
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=False
        ) as client:
            response = client.post(
                base_url.rstrip("/") + "/api/v1/statements",
                content=json.dumps({"statements": list(statements)}).encode(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
            raw = response.content[:MAX_ANSWER_BYTES]
            status = response.status_code
            retry_after = retry_after_seconds(response.headers.get("retry-after"), now=time.time())
    except httpx2.TimeoutException as exc:
        return BatchAnswer(None, elapsed_ms(), retry=True, error=f"timeout ({type(exc).__name__})")
    except httpx2.TransportError as exc:
        return BatchAnswer(
            None, elapsed_ms(), retry=True, error=f"transport error ({type(exc).__name__})"
        )
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return read_answer(status, body, puids, duration_ms=elapsed_ms(), retry_after=retry_after)
