"""A circuit breaker for the LLM endpoint, with its state in memory or in Redis.

closed: calls go through; consecutive failures are counted, and a count that reaches
``failure_threshold`` within ``window_s`` of the first of them opens the breaker.
open: calls are refused at once (the case goes to human review marked "LLM unavailable").
half-open: once ``cooldown_s`` has passed since opening, one caller at a time is let through as
a probe; its success closes the breaker, its failure opens it again for another cool-down.

The state lives in a ``BreakerStore``. ``MemoryBreakerStore`` serves one process (tests, the
embedded mode); ``RedisBreakerStore`` lets every worker on every host share one breaker, so a
failing endpoint is left alone by all of them. If Redis itself cannot be reached the breaker
lets calls through (each call still has its own timeouts) rather than stopping verification.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]


class BreakerStore(Protocol):
    """Shared breaker state. Every method is atomic with respect to other callers."""

    def add_failure(self, name: str, now: float, window_s: float) -> int:
        """Count one failure; returns the consecutive failures within the window, this one
        included. A failure more than ``window_s`` after the first counted one starts over."""
        ...

    def clear_failures(self, name: str) -> None: ...

    def open(self, name: str, now: float) -> None:
        """Mark the breaker open since ``now``; clears the failure count and any probe."""
        ...

    def close(self, name: str) -> None:
        """Forget everything: closed with no failures counted."""
        ...

    def opened_at(self, name: str) -> float | None: ...

    def acquire_probe(self, name: str, now: float, ttl_s: float) -> bool:
        """Take the single half-open probe slot; it frees itself after ``ttl_s`` so a probe
        whose caller died does not keep the breaker half-open for ever."""
        ...


class MemoryBreakerStore:
    """Breaker state for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}
        self._opened_at: dict[str, float] = {}
        self._probe_until: dict[str, float] = {}

    def add_failure(self, name: str, now: float, window_s: float) -> int:
        with self._lock:
            count, first = self._failures.get(name, (0, now))
            if count == 0 or now - first > window_s:
                count, first = 0, now
            self._failures[name] = (count + 1, first)
            return count + 1

    def clear_failures(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)

    def open(self, name: str, now: float) -> None:
        with self._lock:
            self._opened_at[name] = now
            self._failures.pop(name, None)
            self._probe_until.pop(name, None)

    def close(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
            self._opened_at.pop(name, None)
            self._probe_until.pop(name, None)

    def opened_at(self, name: str) -> float | None:
        with self._lock:
            return self._opened_at.get(name)

    def acquire_probe(self, name: str, now: float, ttl_s: float) -> bool:
        with self._lock:
            if self._probe_until.get(name, 0.0) > now:
                return False
            self._probe_until[name] = now + ttl_s
            return True


_ADD_FAILURE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at'))
local count
if (not first) or (now - first > window) then
  redis.call('HSET', KEYS[1], 'first_failure_at', ARGV[1], 'failures', 1)
  count = 1
else
  count = redis.call('HINCRBY', KEYS[1], 'failures', 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return count
"""


class RedisBreakerStore:
    """Breaker state in Redis, shared by all workers: one hash per breaker
    (``<prefix><name>``: failures, first_failure_at, opened_at) and a probe key with a TTL.

    Timestamps are wall-clock seconds, so hosts must keep their clocks in sync (NTP); a skew
    of a second or two only moves the cool-down by as much.
    """

    def __init__(self, client: Any, *, prefix: str = "moderation:llm_breaker:", ttl_s: int = 86400):
        self._redis = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._add_failure = client.register_script(_ADD_FAILURE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "moderation:llm_breaker:", timeout_s: float = 0.5
    ) -> RedisBreakerStore:
        """A store over a new connection pool with short timeouts: a breaker check must never
        cost more than a fraction of a second, even when Redis is down."""
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        return cls(client, prefix=prefix)

    def _key(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def add_failure(self, name: str, now: float, window_s: float) -> int:
        return int(self._add_failure(keys=[self._key(name)], args=[now, window_s, self._ttl_s]))

    def clear_failures(self, name: str) -> None:
        self._redis.hdel(self._key(name), "failures", "first_failure_at")

    def open(self, name: str, now: float) -> None:
        key = self._key(name)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(key, "failures", "first_failure_at")
        pipe.hset(key, "opened_at", repr(now))
        pipe.expire(key, self._ttl_s)
        pipe.delete(f"{key}:probe")
        pipe.execute()

    def close(self, name: str) -> None:
        key = self._key(name)
        self._redis.delete(key, f"{key}:probe")

    def opened_at(self, name: str) -> float | None:
        value = self._redis.hget(self._key(name), "opened_at")
        return None if value is None else float(value)

    def acquire_probe(self, name: str, now: float, ttl_s: float) -> bool:
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(self._redis.set(f"{self._key(name)}:probe", repr(now), nx=True, px=ttl_ms))


@dataclass
class CircuitBreaker:
    """One breaker, e.g. per LLM endpoint and model (``name``), over a store.

    ``probe_ttl_s`` should be at least the longest a single call can take (its deadline), so a
    slow probe is not joined by a second one.
    """

    name: str
    store: BreakerStore
    failure_threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    probe_ttl_s: float = 120.0
    clock: Callable[[], float] = time.time

    def state(self) -> BreakerState:
        try:
            opened = self.store.opened_at(self.name)
        except Exception:
            logger.warning("llm breaker %s: state store unreachable", self.name, exc_info=True)
            return "closed"
        if opened is None:
            return "closed"
        return "half_open" if self.clock() >= opened + self.cooldown_s else "open"

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open, only the one probe caller gets True."""
        try:
            opened = self.store.opened_at(self.name)
            if opened is None:
                return True
            now = self.clock()
            if now < opened + self.cooldown_s:
                return False
            return self.store.acquire_probe(self.name, now, self.probe_ttl_s)
        except Exception:
            logger.warning("llm breaker %s: state store unreachable", self.name, exc_info=True)
            return True

    def record_success(self) -> None:
        try:
            opened = self.store.opened_at(self.name)
            if opened is None:
                self.store.clear_failures(self.name)
            elif self.clock() >= opened + self.cooldown_s:
                self.store.close(self.name)
            # A success that started before the breaker opened leaves it open: only a probe
            # sent after the cool-down may close it.
        except Exception:
            logger.warning("llm breaker %s: state store unreachable", self.name, exc_info=True)

    def record_failure(self) -> None:
        try:
            now = self.clock()
            opened = self.store.opened_at(self.name)
            if opened is not None:
                if now >= opened + self.cooldown_s:
                    self.store.open(self.name, now)  # the half-open probe failed
                return
            if self.store.add_failure(self.name, now, self.window_s) >= self.failure_threshold:
                logger.warning(
                    "llm breaker %s: opened after %d consecutive failures",
                    self.name,
                    self.failure_threshold,
                )
                self.store.open(self.name, now)
        except Exception:
            logger.warning("llm breaker %s: state store unreachable", self.name, exc_info=True)
