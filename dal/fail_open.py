"""Wrappers that keep the API serving when Redis is down, where that is the right trade.

Policy (docs/operations.md): rate limiting fails OPEN — an outage of the limiter must not take
the API down with it, so requests are allowed (and each refusal to check is logged). The request
cache fails OPEN too — idempotency stays guaranteed by the job store's own unique key, and
deduplication of finished requests is an optimisation. Job events fail OPEN: waiting requests
re-read the job store anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dal.errors import StoreUnavailable
from dal.ports import JobEvents, RateLimitDecision, RateLimiter, RequestCache

log = logging.getLogger(__name__)


class _Throttled:
    """Logs an outage at most once per `interval_s`, so a dead Redis does not flood logs."""

    def __init__(self, what: str, interval_s: float = 30.0) -> None:
        self._what = what
        self._interval_s = interval_s
        self._last = 0.0
        self.failures = 0

    def report(self, exc: Exception) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            log.warning(
                "%s unavailable, failing open (%d so far): %s", self._what, self.failures, exc
            )


class FailOpenRateLimiter:
    def __init__(self, inner: RateLimiter, *, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._outage = _Throttled("rate limiter")

    def hit(self, key: str, *, cost: int = 1) -> RateLimitDecision:
        try:
            return self._inner.hit(key, cost=cost)
        except StoreUnavailable as exc:
            self._outage.report(exc)
            return RateLimitDecision(
                allowed=True,
                limit=self._limit,
                remaining=self._limit,
                reset_after_s=0.0,
                retry_after_s=0.0,
            )


class FailOpenRequestCache:
    def __init__(self, inner: RequestCache) -> None:
        self._inner = inner
        self._outage = _Throttled("request cache")

    def get(self, key: str) -> str | None:
        try:
            return self._inner.get(key)
        except StoreUnavailable as exc:
            self._outage.report(exc)
            return None

    def put_if_absent(self, key: str, value: str, *, ttl_s: int) -> str | None:
        try:
            return self._inner.put_if_absent(key, value, ttl_s=ttl_s)
        except StoreUnavailable as exc:
            self._outage.report(exc)
            return None

    def put(self, key: str, value: str, *, ttl_s: int) -> None:
        try:
            self._inner.put(key, value, ttl_s=ttl_s)
        except StoreUnavailable as exc:
            self._outage.report(exc)

    def delete(self, key: str) -> None:
        try:
            self._inner.delete(key)
        except StoreUnavailable as exc:
            self._outage.report(exc)

    def ping(self) -> None:
        self._inner.ping()


class FailOpenJobEvents:
    """Publishing a job's end is a latency optimisation (waiters re-read the job store
    anyway): a bus outage is logged, throttled, and never fails the job or its ack."""

    def __init__(self, inner: JobEvents) -> None:
        self._inner = inner
        self._outage = _Throttled("job events")

    def publish_finished(self, job_id: str) -> None:
        try:
            self._inner.publish_finished(job_id)
        except StoreUnavailable as exc:
            self._outage.report(exc)

    def subscribe(self, on_finished: Callable[[str], None]) -> Callable[[], None]:
        return self._inner.subscribe(on_finished)
