"""The Redis client the adapters share, and the translation of outages into StoreUnavailable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError, TimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from dal.errors import StoreUnavailable

# Errors that mean "Redis cannot serve this now", as opposed to a bug in the request.
# ReadOnlyError: the node we reached was demoted to a replica during a failover.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,  # includes refused/reset connections and BusyLoadingError
    TimeoutError,
    BusyLoadingError,
    ReadOnlyError,
)


def make_redis_client(
    url: str,
    *,
    connect_timeout_s: float = 0.5,
    timeout_s: float = 1.0,
    health_check_interval_s: int = 15,
) -> redis.Redis:
    """A client for `url` (redis://, rediss:// or unix://) that fails fast in an outage.

    Short socket timeouts bound how long a request waits on a dead or frozen server, and no
    command is retried: a retried EVALSHA after a timeout could count a hit twice, and a
    retried put-if-absent could find its own value and report a duplicate. A connection that
    the server closed while it sat in the pool (a Redis restart) is replaced at checkout, so a
    restart between two calls is not seen; `health_check_interval_s` PINGs connections that
    were idle that long before using them again. Thread-safe (a connection pool).
    """
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=health_check_interval_s,
        retry=Retry(NoBackoff(), 0),
    )


@contextmanager
def unavailable_on_outage(what: str) -> Iterator[None]:
    """Re-raise redis-py's connection-level errors as StoreUnavailable."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        raise StoreUnavailable(f"{what} is unavailable: {exc}") from exc
