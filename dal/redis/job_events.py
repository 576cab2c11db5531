"""Job events over Redis pub/sub: the worker that ends a job publishes its id on one
channel, and every API process listening wakes the requests waiting on it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from dal.redis.channel_listener import listen
from dal.redis.client import unavailable_on_outage

log = logging.getLogger(__name__)


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
        return listen(
            self._client,
            self._channel,
            name="job-events",
            on_message=lambda data: self._deliver(on_finished, data),
        )

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
