"""The circuit breaker over both stores: in memory, and over the real local Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from llm_verify.breaker import CircuitBreaker, MemoryBreakerStore, RedisBreakerStore

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_prefix():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc}")
    prefix = f"test:llm_breaker:{uuid.uuid4().hex}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryBreakerStore()
    prefix = request.getfixturevalue("redis_prefix")
    return RedisBreakerStore.from_url(REDIS_URL, prefix=prefix)


def _breaker(store, clock, **overrides) -> CircuitBreaker:
    values = {
        "name": "llm",
        "store": store,
        "failure_threshold": 3,
        "window_s": 10,
        "cooldown_s": 5,
        "clock": clock,
    }
    values.update(overrides)
    return CircuitBreaker(**values)


def test_opens_after_consecutive_failures(store):
    clock = Clock()
    breaker = _breaker(store, clock)
    for _ in range(2):
        breaker.record_failure()
        assert breaker.state() == "closed"
        assert breaker.allow()
    breaker.record_failure()
    assert breaker.state() == "open"
    assert breaker.allow() is False


def test_a_success_resets_the_count(store):
    clock = Clock()
    breaker = _breaker(store, clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state() == "closed"


def test_failures_spread_beyond_the_window_do_not_open(store):
    clock = Clock()
    breaker = _breaker(store, clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 11
    breaker.record_failure()  # starts a new window
    breaker.record_failure()
    assert breaker.state() == "closed"
    breaker.record_failure()
    assert breaker.state() == "open"


def test_half_open_lets_one_probe_through(store):
    clock = Clock()
    breaker = _breaker(store, clock, failure_threshold=1)
    breaker.record_failure()
    clock.now += 4.9
    assert breaker.allow() is False
    clock.now += 0.2
    assert breaker.state() == "half_open"
    assert breaker.allow() is True
    assert breaker.allow() is False  # a second caller while the probe is out
    breaker.record_success()
    assert breaker.state() == "closed"
    assert breaker.allow()
    assert breaker.allow()


def test_failed_probe_opens_again_for_a_full_cooldown(store):
    clock = Clock()
    breaker = _breaker(store, clock, failure_threshold=1)
    breaker.record_failure()
    clock.now += 6
    assert breaker.allow() is True
    breaker.record_failure()
    assert breaker.state() == "open"
    clock.now += 4.9
    assert breaker.allow() is False
    clock.now += 0.2
    assert breaker.allow() is True


def test_late_results_do_not_move_an_open_breaker(store):
    clock = Clock()
    breaker = _breaker(store, clock, failure_threshold=1)
    breaker.record_failure()
    clock.now += 1
    breaker.record_success()  # a call that started before the breaker opened
    assert breaker.state() == "open"
    clock.now += 3
    breaker.record_failure()  # a straggler failure does not extend the cool-down
    clock.now += 1.1
    assert breaker.state() == "half_open"


def test_a_probe_whose_caller_died_frees_itself():
    clock = Clock()
    breaker = _breaker(MemoryBreakerStore(), clock, failure_threshold=1, probe_ttl_s=30)
    breaker.record_failure()
    clock.now += 6
    assert breaker.allow() is True
    clock.now += 29
    assert breaker.allow() is False
    clock.now += 2
    assert breaker.allow() is True


def test_redis_breakers_in_different_workers_share_state(redis_prefix):
    clock = Clock()
    worker_a = _breaker(RedisBreakerStore.from_url(REDIS_URL, prefix=redis_prefix), clock)
    worker_b = _breaker(RedisBreakerStore.from_url(REDIS_URL, prefix=redis_prefix), clock)
    worker_a.record_failure()
    worker_b.record_failure()
    worker_a.record_failure()
    assert worker_b.state() == "open"
    assert worker_b.allow() is False
    clock.now += 6
    assert worker_a.allow() is True  # worker a takes the probe
    assert worker_b.allow() is False
    worker_a.record_success()
    assert worker_b.state() == "closed"

    client = redis.Redis.from_url(REDIS_URL)
    assert sorted(k.decode() for k in client.keys(f"{redis_prefix}*")) == []
    worker_a.record_failure()
    assert [k.decode() for k in client.keys(f"{redis_prefix}*")] == [f"{redis_prefix}llm"]


def test_unreachable_redis_lets_calls_through_quickly():
    store = RedisBreakerStore.from_url("redis://127.0.0.1:1/0", timeout_s=0.2)
    breaker = CircuitBreaker(name="llm", store=store, failure_threshold=1)
    started = time.monotonic()
    assert breaker.allow() is True
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state() == "closed"
    assert time.monotonic() - started < 2.0
