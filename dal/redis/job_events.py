"""Job events over Redis pub/sub: the worker that ends a job publishes its id on one
channel, and every API process listening wakes the requests waiting on it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from dal.redis.client import OUTAGE_ERRORS, unavailable_on_outage

log = logging.getLogger(__name__)

_POLL_S = 1.0  # how often the listener looks up from an idle channel to see if it should stop
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # between reconnection attempts during an outage


class RedisJobEvents:
    """Publishes to and listens on `channel`. Publishing raises StoreUnavailable when Redis is
    down; a listener reconnects by itself (events published meanwhile are lost, which the
    waiters' own re-reads of the job store cover)."""

    def __init__(self, client: redis.Redis, *, channel: str = "txt2img:job-events") -> None:
        self._client = client
        self._channel = channel

    def publish_finished(self, job_id: str) -> None:
        with unavailable_on_outage("job events (Redis)"):
            self._client.publish(self._channel, job_id)

    def subscribe(self, on_finished: Callable[[str], None]) -> Callable[[], None]:
        stopped = threading.Event()
        listening = threading.Event()
        thread = threading.Thread(
            target=self._listen,
            args=(on_finished, stopped, listening),
            name="job-events",
            daemon=True,
        )
        thread.start()
        # Subscribed before returning (unless Redis is down), so an event published right
        # after is heard.
        listening.wait(timeout=2.0)

        def stop() -> None:
            stopped.set()
            thread.join(timeout=_POLL_S + 2.0)

        return stop

    def _listen(
        self,
        on_finished: Callable[[str], None],
        stopped: threading.Event,
        listening: threading.Event,
    ) -> None:
        failures = 0
        while not stopped.is_set():
            pubsub: Any = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                if failures:
                    log.info("job events: listening on Redis again after %d failures", failures)
                failures = 0
                listening.set()
                while not stopped.is_set():
                    message = pubsub.get_message(timeout=_POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._deliver(on_finished, message.get("data"))
            except OUTAGE_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("job events: Redis unavailable, reconnecting: %s", exc)
                stopped.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1])
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*OUTAGE_ERRORS):
                        pubsub.close()

    @staticmethod
    def _deliver(on_finished: Callable[[str], None], data: object) -> None:
        job_id = data.decode() if isinstance(data, bytes) else data
        if not isinstance(job_id, str) or not job_id:
            return
        try:
            on_finished(job_id)
        except Exception:
            log.exception("a job-events subscriber failed on job %s", job_id)


__all__ = ["RedisJobEvents"]
