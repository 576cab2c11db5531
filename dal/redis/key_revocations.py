"""Key revocations over Redis pub/sub: the revoking command publishes on one channel, and
every API process's listener moves its epoch when it hears it.

Pub/sub delivers only to connected listeners, so the epoch also moves on every (re)connect
and is None while the listener is not subscribed: a process that may have missed a
revocation forgets every key it verified, the rule of Redis's own client-side caching
(https://redis.io/docs/latest/develop/reference/client-side-caching/, "flush the local
cache" on a lost connection). A listener cut off without a reset (a network partition)
notices at its next health check (the client's `health_check_interval`, 15 s).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable

import redis

from dal.redis.channel_listener import listen
from dal.redis.client import unavailable_on_outage


class RedisKeyRevocations:
    def __init__(self, client: redis.Redis, *, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._counter = itertools.count(1)
        self._epoch: int | None = None  # None until subscribed

    def announce(self) -> None:
        with unavailable_on_outage("key revocations (Redis)"):
            self._client.publish(self._channel, "revoked")

    def epoch(self) -> Hashable | None:
        return self._epoch

    def listen(self) -> Callable[[], None]:
        """Start hearing revocations (a daemon thread); returns the function that stops it.
        Waits up to 2 s for the subscription, so keys are kept from the first request."""
        stop_listening = listen(
            self._client,
            self._channel,
            name="key-revocations",
            on_message=lambda _: self._next_epoch(),
            # Revocations published while unsubscribed are lost: a new epoch from the
            # server's confirmation on, none while the channel is lost.
            on_subscribed=self._next_epoch,
            on_lost=self._no_epoch,
        )

        def stop() -> None:
            stop_listening()
            self._no_epoch()

        return stop

    def _next_epoch(self) -> None:
        self._epoch = next(self._counter)

    def _no_epoch(self) -> None:
        self._epoch = None


__all__ = ["RedisKeyRevocations"]
