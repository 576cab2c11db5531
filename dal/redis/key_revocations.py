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

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

import redis

from dal.redis.client import OUTAGE_ERRORS, unavailable_on_outage

log = logging.getLogger(__name__)

_POLL_S = 1.0  # how often the listener looks up from an idle channel to see if it should stop
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # between reconnection attempts during an outage


class RedisKeyRevocations:
    def __init__(self, client: redis.Redis, *, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._counter = itertools.count(1)
        self._epoch: int | None = None  # None until subscribed
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def announce(self) -> None:
        with unavailable_on_outage("key revocations (Redis)"):
            self._client.publish(self._channel, "revoked")

    def epoch(self) -> Hashable | None:
        return self._epoch

    def listen(self) -> Callable[[], None]:
        """Start hearing revocations (a daemon thread); returns the function that stops it.
        Waits up to 2 s for the subscription, so keys are kept from the first request."""
        subscribed = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(subscribed,), name="key-revocations", daemon=True
        )
        self._thread.start()
        subscribed.wait(timeout=2.0)
        return self._stop

    def _stop(self) -> None:
        self._stopped.set()
        self._epoch = None
        if self._thread is not None:
            self._thread.join(timeout=_POLL_S + 2.0)

    def _listen(self, subscribed: threading.Event) -> None:
        failures = 0
        while not self._stopped.is_set():
            pubsub: Any = None
            try:
                pubsub = self._client.pubsub()
                pubsub.subscribe(self._channel)
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=_POLL_S)
                    kind = message.get("type") if message is not None else None
                    if kind == "subscribe":
                        # Only from the server's confirmation on is every revocation heard;
                        # those published while we were away are lost: a new epoch.
                        self._epoch = next(self._counter)
                        if failures:
                            log.info("key revocations: listening again after %d failures", failures)
                        failures = 0
                        subscribed.set()
                    elif kind == "message":
                        self._epoch = next(self._counter)
            except OUTAGE_ERRORS as exc:
                self._epoch = None
                failures += 1
                if failures == 1:
                    log.warning("key revocations: Redis unavailable, keys are re-read: %s", exc)
                self._stopped.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1])
            except Exception:
                self._epoch = None
                log.exception("key revocations: listener failed; restarting it")
                self._stopped.wait(_BACKOFF_S[-1])
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*OUTAGE_ERRORS):
                        pubsub.close()


__all__ = ["RedisKeyRevocations"]
