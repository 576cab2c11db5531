"""The in-memory rate limiter and request cache against their port contracts, on a manual
clock (the Redis adapters run the same cases on real time)."""

from __future__ import annotations

import pytest

from dal.errors import StoreUnavailable
from dal.memory import MemoryJobEvents, MemoryRateLimiter, MemoryRequestCache
from dal.ports import JobEvents, RateLimiter
from tests.contracts.job_events_contract import JobEventsContract
from tests.contracts.rate_limiter_contract import (
    Advance,
    MakeLimiter,
    ManualMonotonic,
    RateLimiterContract,
)
from tests.contracts.request_cache_contract import RequestCacheContract


@pytest.fixture
def clock() -> ManualMonotonic:
    return ManualMonotonic()


class TestMemoryRateLimiter(RateLimiterContract):
    @pytest.fixture
    def advance(self, clock: ManualMonotonic) -> Advance:
        return clock.advance

    @pytest.fixture
    def make_limiter(self, clock: ManualMonotonic) -> MakeLimiter:
        def make(limit: int, period_s: float, burst: int | None) -> RateLimiter:
            return MemoryRateLimiter(limit=limit, period_s=period_s, burst=burst, clock=clock)

        return make


class TestMemoryRequestCache(RequestCacheContract):
    @pytest.fixture
    def advance(self, clock: ManualMonotonic) -> Advance:
        return clock.advance

    @pytest.fixture
    def cache(self, clock: ManualMonotonic) -> MemoryRequestCache:
        return MemoryRequestCache(clock=clock)


class TestMemoryJobEvents(JobEventsContract):
    @pytest.fixture
    def events(self) -> JobEvents:
        return MemoryJobEvents()

    def test_an_unavailable_bus_raises_store_unavailable(self) -> None:
        events = MemoryJobEvents()
        events.available = False
        with pytest.raises(StoreUnavailable):
            events.publish_finished("job-1")
