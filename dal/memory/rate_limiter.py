from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from dal.ports import RateLimitDecision


class MemoryRateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `limit` per `period_s`.

    Process-local: with several API instances each enforces its own share (the Redis limiter
    enforces one limit across instances).
    """

    def __init__(
        self,
        *,
        limit: int,
        period_s: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if limit <= 0 or period_s <= 0:
            raise ValueError("limit and period must be positive")
        self._capacity = float(burst if burst is not None else limit)
        self._rate = limit / period_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def hit(self, key: str, *, cost: int = 1) -> RateLimitDecision:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self._capacity, now))
            tokens = min(self._capacity, tokens + (now - last) * self._rate)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            if key not in self._buckets and len(self._buckets) >= self._max_keys:
                self._evict_full_buckets(now)
            self._buckets[key] = (tokens, now)
        retry_after = 0.0 if allowed else (cost - tokens) / self._rate
        return RateLimitDecision(
            allowed=allowed,
            limit=int(self._capacity),
            remaining=max(0, math.floor(tokens)),
            reset_after_s=(self._capacity - tokens) / self._rate,
            retry_after_s=retry_after,
        )

    def _evict_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely carries no state worth keeping.
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self._rate >= self._capacity
        ]
        for k in full:
            del self._buckets[k]
