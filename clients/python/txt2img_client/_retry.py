"""When the client sends a request again, and how long it waits first.

Only a request that is safe to send twice is sent again: reads, the cancel (canceling a job
twice leaves it canceled), and a submit that carries an `Idempotency-Key` (the client makes one
per `submit` call and sends the same one on each retry, so the service records one job).

A request is sent again when the service had no answer at all (refused, reset, timed out) or
answered 429 or 503. `Retry-After` (seconds or an HTTP date) is honoured; without it the waits
double from `backoff_base_s` up to `backoff_max_s`, each drawn from the upper half of that range
("equal jitter"), so clients that failed together do not come back together. A call gives up
after `max_attempts` attempts, or when the next wait would take its waits past `max_wait_s`: a
daily quota's `Retry-After` of hours is raised at once, with `retry_after` on the exception.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

# No answer at all, or one cut short: the request may be sent again. (UnsupportedProtocol,
# LocalProtocolError and ProxyError say the request itself is wrong; they are never retried.)
RETRYABLE_TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_DELAY_SECONDS = re.compile(r"[0-9]+")


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """A `Retry-After` header as seconds from `now` (RFC 9110: delay-seconds or an HTTP date);
    None when it is absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_retry_safe(request: httpx.Request) -> bool:
    """Sending the request twice does what sending it once does."""
    if request.method in _SAFE_METHODS:
        return True
    return request.method == "POST" and "Idempotency-Key" in request.headers


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a client retries (the module docstring says when). `RetryPolicy(max_attempts=1)`
    never retries."""

    max_attempts: int = 4
    max_wait_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    statuses: frozenset[int] = frozenset({429, 503})
    # A draw from [0, 1); injectable so tests can pin it.
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_wait_s < 0:
            raise ValueError("need max_attempts >= 1 and max_wait_s >= 0")
        if not 0 <= self.backoff_base_s <= self.backoff_max_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_max_s")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) when the service named none."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + self.jitter() * ceiling / 2

    def delay(
        self,
        *,
        attempt: int,
        waited_s: float,
        response: httpx.Response | None,
        now: datetime | None = None,
    ) -> float | None:
        """Seconds to wait before sending again after attempt number `attempt` ended with
        `response` (None: no answer), the call having waited `waited_s` so far; None: give up."""
        if attempt >= self.max_attempts:
            return None
        if response is None:
            wait = self.backoff(attempt)
        elif response.status_code in self.statuses:
            after = retry_after_s(response.headers.get("Retry-After"), now=now)
            wait = self.backoff(attempt) if after is None else after
        else:
            return None
        return wait if waited_s + wait <= self.max_wait_s else None
