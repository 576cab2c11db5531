"""Listening on one Redis pub/sub channel for as long as a process runs, through outages: the
one loop behind the job-events bus and the key revocations.

Pub/sub delivers only to connected listeners, so a listener says when it is subscribed (the
server confirmed) and when it lost the channel: what was published in between is lost, and
each user decides what that costs (waiters re-read the store; kept keys are forgotten).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from dal.redis.client import OUTAGE_ERRORS

log = logging.getLogger(__name__)

_POLL_S = 1.0  # how often the listener looks up from an idle channel to see if it should stop
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # between reconnection attempts during an outage


def _nothing() -> None:
    pass


def listen(
    client: redis.Redis,
    channel: str,
    *,
    name: str,
    on_message: Callable[[object], None],
    on_subscribed: Callable[[], None] = _nothing,
    on_lost: Callable[[], None] = _nothing,
) -> Callable[[], None]:
    """Call `on_message(data)` for every message on `channel`, from a daemon thread named
    `name` that reconnects by itself; returns the function that stops it. Waits up to 2 s for
    the first subscription, so a message published right after is heard (unless Redis is
    down). `on_subscribed` runs at each confirmed (re)subscription, `on_lost` whenever the
    channel is lost."""
    stopped = threading.Event()
    subscribed = threading.Event()

    def confirmed() -> None:
        on_subscribed()
        subscribed.set()

    thread = threading.Thread(
        target=_listen,
        args=(client, channel, name, on_message, confirmed, on_lost, stopped),
        name=name,
        daemon=True,
    )
    thread.start()
    subscribed.wait(timeout=2.0)

    def stop() -> None:
        stopped.set()
        thread.join(timeout=_POLL_S + 2.0)

    return stop


def _listen(
    client: redis.Redis,
    channel: str,
    name: str,
    on_message: Callable[[object], None],
    on_subscribed: Callable[[], None],
    on_lost: Callable[[], None],
    stopped: threading.Event,
) -> None:
    failures = 0
    while not stopped.is_set():
        pubsub: Any = None
        try:
            pubsub = client.pubsub()
            pubsub.subscribe(channel)
            while not stopped.is_set():
                message = pubsub.get_message(timeout=_POLL_S)
                kind = message.get("type") if message is not None else None
                if kind == "subscribe":
                    if failures:
                        log.info("%s: listening on Redis again after %d failures", name, failures)
                    failures = 0
                    on_subscribed()
                elif kind == "message" and message is not None:
                    on_message(message.get("data"))
        except OUTAGE_ERRORS as exc:
            on_lost()
            failures += 1
            if failures == 1:
                log.warning("%s: Redis unavailable, reconnecting: %s", name, exc)
            stopped.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1])
        except Exception:
            on_lost()
            log.exception("%s: listener failed; restarting it", name)
            stopped.wait(_BACKOFF_S[-1])
        finally:
            if pubsub is not None:
                with contextlib.suppress(*OUTAGE_ERRORS):
                    pubsub.close()


__all__ = ["listen"]
