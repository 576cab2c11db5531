"""The Redis rate limiter, request cache, job events and line for the GPUs against their port
contracts, on a real Redis (REDIS_URL, else a local server, database 15) and on real time."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from dal.ports import RateLimiter
from dal.redis import (
    RedisFairLine,
    RedisJobEvents,
    RedisKeyRevocations,
    RedisRateLimiter,
    RedisRequestCache,
    make_redis_client,
)
from tests.contracts.fair_line_contract import FairLineContract, ManualClock
from tests.contracts.job_events_contract import JobEventsContract
from tests.contracts.key_revocations_contract import KeyRevocationsContract, Pair
from tests.contracts.rate_limiter_contract import MakeLimiter, RateLimiterContract
from tests.contracts.request_cache_contract import RequestCacheContract
from tests.integration import redis_service

redis_url = redis_service.redis_url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = make_redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """This test's key prefix; its keys are deleted afterwards."""
    prefix = redis_service.unique_prefix()
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


class TestRedisRateLimiter(RateLimiterContract):
    @pytest.fixture
    def make_limiter(self, client: redis.Redis, prefix: str) -> MakeLimiter:
        made = 0

        def make(limit: int, period_s: float, burst: int | None) -> RateLimiter:
            nonlocal made
            made += 1
            return RedisRateLimiter(
                client, limit=limit, period_s=period_s, burst=burst, prefix=f"{prefix}{made}:"
            )

        return make


class TestRedisJobEvents(JobEventsContract):
    @pytest.fixture
    def events(self, client: redis.Redis, prefix: str) -> RedisJobEvents:
        return RedisJobEvents(client, channel=f"{prefix}job-events")


class TestRedisFairLine(FairLineContract):
    @pytest.fixture
    def line(self, client: redis.Redis, prefix: str, clock: ManualClock) -> RedisFairLine:
        return RedisFairLine(client, prefix=prefix, clock=clock)


class TestRedisKeyRevocations(KeyRevocationsContract):
    @pytest.fixture
    def pair(self, redis_url: str, prefix: str) -> Iterator[Pair]:
        # Two processes: two clients of their own on one channel.
        revoker_client, listener_client = make_redis_client(redis_url), make_redis_client(redis_url)
        channel = f"{prefix}key-revocations"
        yield (
            RedisKeyRevocations(revoker_client, channel=channel),
            RedisKeyRevocations(listener_client, channel=channel),
        )
        revoker_client.close()
        listener_client.close()

    def test_a_listener_vouches_for_nothing_before_it_listens_or_after_it_stops(
        self, client: redis.Redis, prefix: str
    ) -> None:
        revocations = RedisKeyRevocations(client, channel=f"{prefix}key-revocations")
        assert revocations.epoch() is None
        stop = revocations.listen()
        assert revocations.epoch() is not None
        stop()
        assert revocations.epoch() is None

    def test_a_listener_without_redis_vouches_for_nothing(self) -> None:
        """Pub/sub reaches connected listeners only: one that cannot connect may have
        missed a revocation, so it keeps no key."""
        dead = make_redis_client("redis://127.0.0.1:1/0")
        revocations = RedisKeyRevocations(dead, channel="txt2img-test:key-revocations")
        stop = revocations.listen()
        try:
            assert revocations.epoch() is None
        finally:
            stop()
            dead.close()


class TestRedisRequestCache(RequestCacheContract):
    @pytest.fixture
    def cache(self, client: redis.Redis, prefix: str) -> RedisRequestCache:
        return RedisRequestCache(client, prefix=prefix)


# What only the Redis adapters promise.


def test_limiter_key_expires_when_the_bucket_would_be_full(
    client: redis.Redis, prefix: str
) -> None:
    """An idle key costs nothing: its TTL is the time to refill, then it is gone."""
    limiter = RedisRateLimiter(client, limit=10, period_s=1.0, burst=3, prefix=prefix)
    limiter.hit("alice")
    limiter.hit("alice")
    ttl_ms = client.pttl(f"{prefix}alice")
    assert 150 <= ttl_ms <= 200  # two tokens at 0.1 s each
    time.sleep(0.25)
    assert client.exists(f"{prefix}alice") == 0
    assert limiter.hit("alice").remaining == 2


def test_limiters_on_one_prefix_share_buckets(
    client: redis.Redis, redis_url: str, prefix: str
) -> None:
    """Two limiters with their own clients (two API instances) and one prefix enforce one
    budget."""
    other_client = make_redis_client(redis_url)
    try:
        a = RedisRateLimiter(client, limit=1, period_s=60.0, burst=3, prefix=prefix)
        b = RedisRateLimiter(other_client, limit=1, period_s=60.0, burst=3, prefix=prefix)
        assert [a.hit("k").allowed, b.hit("k").allowed, a.hit("k").allowed] == [True] * 3
        assert not b.hit("k").allowed
        assert not a.hit("k").allowed
        assert b.hit("k").remaining == 0
    finally:
        other_client.close()


def test_negative_cost_is_refused(client: redis.Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(client, limit=1, period_s=60.0, prefix=prefix)
    with pytest.raises(ValueError):
        limiter.hit("k", cost=-1)


def test_cache_ttl_must_be_a_whole_positive_second(client: redis.Redis, prefix: str) -> None:
    cache = RedisRequestCache(client, prefix=prefix)
    with pytest.raises(ValueError):
        cache.put("k", "v", ttl_s=0)
    with pytest.raises(ValueError):
        cache.put_if_absent("k", "v", ttl_s=0)


def test_cache_sets_the_ttl_on_the_key(client: redis.Redis, prefix: str) -> None:
    cache = RedisRequestCache(client, prefix=prefix)
    cache.put("a", "v", ttl_s=30)
    assert cache.put_if_absent("b", "v", ttl_s=40) is None
    assert 29 <= client.ttl(f"{prefix}a") <= 30
    assert 39 <= client.ttl(f"{prefix}b") <= 40
