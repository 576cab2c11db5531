"""The in-memory rate limiter and request cache against their port contracts, on a manual
clock (the Redis adapters run the same cases on real time)."""

from __future__ import annotations

import pytest

from dal.memory import MemoryRateLimiter, MemoryRequestCache
from dal.ports import RateLimiter
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
