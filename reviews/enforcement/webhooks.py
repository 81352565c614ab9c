"""The marketplace webhook: signing and one delivery attempt (Standard Webhooks), Django-free.

``sign`` computes the Standard Webhooks headers for a body: ``webhook-id`` (the caller keeps it
stable across retries), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``, one
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` entry per secret, space-separated, so the
receiver can rotate secrets. ``deliver`` POSTs once, signed afresh with the current time, and
returns a ``DeliveryResult`` that says whether a retry can help; it raises only for what the
caller got wrong (a bad URL, no secrets, a body over ``MAX_BODY_BYTES``), never for what the
network or the receiver does. Retrying, scheduling and recording belong to the caller.

The HTTP client is ``httpx2`` (the maintained httpx line, already installed through openai).
Secrets never appear in a repr, an error message or a result.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx2

SECRET_PREFIX = "whsec_"
# Standard Webhooks: "The secret key should be between 24 bytes and 64 bytes."
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64
# Standard Webhooks recommends payloads under about 20 kB; ours refuses anything larger.
MAX_BODY_BYTES = 20_000
_DELTA_SECONDS = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Secret:
    """One signing key. Build it with ``Secret.parse``; its repr hides the key."""

    key: bytes = field(repr=False)

    @classmethod
    def parse(cls, value: str) -> Secret:
        """A ``whsec_`` + base64 secret (padding optional); ValueError naming what is wrong."""
        value = value.strip()
        if not value.startswith(SECRET_PREFIX):
            raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
        encoded = value.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:  # binascii.Error included; non-ASCII text as well
            raise ValueError(
                f"webhook secret is not valid base64 after {SECRET_PREFIX!r}"
            ) from None
        if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
            raise ValueError(
                f"webhook secret key is {len(key)} bytes; Standard Webhooks needs "
                f"{SECRET_MIN_BYTES} to {SECRET_MAX_BYTES}"
            )
        return cls(key)


def parse_secrets(value: str) -> tuple[Secret, ...]:
    """Several secrets (rotation), separated by whitespace or commas; at least one."""
    secrets = tuple(Secret.parse(part) for part in re.split(r"[\s,]+", value) if part)
    if not secrets:
        raise ValueError("no webhook secret given")
    return secrets


def sign(
    *, secrets: Sequence[Secret], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The request headers for `body`: id, timestamp, one v1 signature per secret, JSON type."""
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    if not webhook_id or any(c.isspace() for c in webhook_id):
        raise ValueError("webhook_id must be non-empty and contain no whitespace")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signatures = (
        "v1," + base64.b64encode(hmac.new(s.key, signed, hashlib.sha256).digest()).decode()
        for s in secrets
    )
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int | None  # None: no HTTP answer (connection failed or timed out)
    delivered: bool  # a 2xx answer
    gone: bool  # 410: the receiver will never take this webhook
    retry_after_seconds: int | None  # from Retry-After, >= 0; None when absent or unparseable
    error: str | None  # short, never the secret; None when delivered
    permanent: bool  # a retry cannot help (only 410)
    duration_ms: int


def retry_after_seconds(value: str | None, *, now: float) -> int | None:
    """Retry-After as delta-seconds or an HTTP-date (relative to `now`), clamped at 0."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return max(0, int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0, math.ceil(when.timestamp() - now))


def deliver(
    *,
    url: str,
    secrets: Sequence[Secret],
    webhook_id: str,
    body: bytes,
    connect_timeout: float,
    read_timeout: float,
    now: Callable[[], float] | None = None,
    client: httpx2.Client | None = None,
) -> DeliveryResult:
    """POST `body` once to `url`, signed with the current time; the result says what happened.
    Pass a long-lived `client` to keep connections (and its TLS context) between deliveries."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"webhook body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    if not url.startswith(("https://", "http://")):
        raise ValueError("webhook url must be http:// or https://")
    clock = now or time.time
    headers = sign(secrets=secrets, webhook_id=webhook_id, timestamp=math.floor(clock()), body=body)
    timeout = httpx2.Timeout(
        connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
    )
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    own = client is None
    http = client if client is not None else httpx2.Client(follow_redirects=False)
    try:
        # Streamed and never read: only the status and headers matter.
        with http.stream(
            "POST", url, content=body, headers=headers, timeout=timeout, follow_redirects=False
        ) as response:
            status = response.status_code
            retry_after = retry_after_seconds(response.headers.get("retry-after"), now=clock())
    except httpx2.TimeoutException as exc:
        return _unreachable(f"timeout ({type(exc).__name__})", elapsed_ms())
    except httpx2.TransportError as exc:
        return _unreachable(f"transport error ({type(exc).__name__})", elapsed_ms())
    finally:
        if own:
            http.close()
    delivered = 200 <= status < 300
    return DeliveryResult(
        status_code=status,
        delivered=delivered,
        gone=status == 410,
        retry_after_seconds=retry_after,
        error=None if delivered else f"HTTP {status}",
        permanent=status == 410,
        duration_ms=elapsed_ms(),
    )


def _unreachable(error: str, duration_ms: int) -> DeliveryResult:
    return DeliveryResult(
        status_code=None,
        delivered=False,
        gone=False,
        retry_after_seconds=None,
        error=error,
        permanent=False,
        duration_ms=duration_ms,
    )
