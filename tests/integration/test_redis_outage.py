"""The Redis adapters in an outage, against a dedicated redis-server that the tests stop,
freeze and restart: calls fail fast with StoreUnavailable, and the same objects work again
once Redis is back."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dal.errors import StoreUnavailable
from dal.redis import RedisJobEvents, RedisRateLimiter, RedisRequestCache, make_redis_client
from emulators import redis as redis_emulator
from emulators.process import Service, ServiceUnavailable, free_port
from tests.contracts.job_events_contract import Heard
from tests.integration.availability import missing

# make_redis_client: 0.5 s to connect, 1 s to answer, no retries.
FAIL_FAST_S = 2.0


class DedicatedRedis:
    """A redis-server of this test's own, which the test may stop and start again."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.service: Service | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        try:
            self.service = redis_emulator.start(self.port, state_dir=self.state_dir)
        except ServiceUnavailable as exc:
            missing("redis-server", str(exc))

    def stop(self) -> None:
        if self.service is not None:
            redis_emulator.stop(self.service, state_dir=self.state_dir)
            self.service = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.service is not None and self.service.pid is not None
        os.kill(self.service.pid, sig)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DedicatedRedis]:
    server = DedicatedRedis(tmp_path / "redis")
    server.start()
    yield server
    if server.service is not None:
        server.signal(signal.SIGCONT)  # in case a test left it frozen
    server.stop()


@pytest.fixture
def client(server: DedicatedRedis) -> Iterator[redis.Redis]:
    client = make_redis_client(server.url)
    yield client
    client.close()


@pytest.fixture
def limiter(client: redis.Redis) -> RedisRateLimiter:
    return RedisRateLimiter(client, limit=10, period_s=1.0, burst=5, prefix="outage:rl:")


@pytest.fixture
def cache(client: redis.Redis) -> RedisRequestCache:
    return RedisRequestCache(client, prefix="outage:cache:")


def calls(limiter: RedisRateLimiter, cache: RedisRequestCache) -> dict[str, Callable[[], object]]:
    """Every adapter operation once."""
    return {
        "hit": lambda: limiter.hit("alice"),
        "get": lambda: cache.get("k"),
        "put_if_absent": lambda: cache.put_if_absent("idem", "v", ttl_s=60),
        "put": lambda: cache.put("k", "v", ttl_s=60),
        "delete": lambda: cache.delete("gone"),
        "ping": cache.ping,
    }


def assert_all_fail_fast(operations: dict[str, Callable[[], object]]) -> None:
    for name, call in operations.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        elapsed = time.monotonic() - started
        assert elapsed < FAIL_FAST_S, f"{name} took {elapsed:.2f} s to fail"


def assert_all_work(operations: dict[str, Callable[[], object]]) -> None:
    for call in operations.values():
        call()


def test_a_stopped_server_fails_fast_and_a_restart_heals(
    server: DedicatedRedis, limiter: RedisRateLimiter, cache: RedisRequestCache
) -> None:
    operations = calls(limiter, cache)
    assert_all_work(operations)

    server.stop()
    assert_all_fail_fast(operations)
    assert_all_fail_fast(operations)  # and again: no state left half-broken

    server.start()  # same port, empty data, empty script cache
    assert_all_work(operations)
    assert limiter.hit("bob").allowed
    assert cache.put_if_absent("fresh", "1", ttl_s=60) is None
    assert cache.get("fresh") == "1"


def test_a_restart_between_calls_is_not_seen(
    server: DedicatedRedis, limiter: RedisRateLimiter, cache: RedisRequestCache
) -> None:
    """Pooled connections that the old server closed are replaced before they are used."""
    operations = calls(limiter, cache)
    assert_all_work(operations)
    server.stop()
    server.start()
    assert_all_work(operations)


def test_a_frozen_server_times_out_instead_of_hanging(
    server: DedicatedRedis, limiter: RedisRateLimiter, cache: RedisRequestCache
) -> None:
    """A server that accepts connections but never answers (SIGSTOP) costs one socket
    timeout, not a hung request."""
    operations = calls(limiter, cache)
    assert_all_work(operations)
    server.signal(signal.SIGSTOP)
    try:
        for name in ("hit", "get"):
            assert_all_fail_fast({name: operations[name]})
    finally:
        server.signal(signal.SIGCONT)
    assert_all_work(operations)


def test_job_events_fail_while_redis_is_down_and_the_listener_comes_back(
    server: DedicatedRedis, client: redis.Redis
) -> None:
    """Publishing raises StoreUnavailable during the outage; the subscription reconnects by
    itself after the restart and hears the next job, without being subscribed again."""
    events = RedisJobEvents(client, channel="txt2img:job-events")
    heard = Heard()
    stop = events.subscribe(heard)
    try:
        events.publish_finished("before")
        assert heard.wait_for(1) == ["before"]
        server.stop()
        with pytest.raises(StoreUnavailable):
            events.publish_finished("during")
        server.start()  # same port, empty
        deadline = time.monotonic() + 15
        # Published until the listener is back (it reconnects with backoff, up to 5 s).
        while len(heard.ids) < 2 and time.monotonic() < deadline:
            events.publish_finished("after")
            heard.wait_for(2, timeout=0.5)
        assert heard.ids[0] == "before" and set(heard.ids[1:]) == {"after"}
    finally:
        stop()
