"""How often one task has been delivered, counted in Redis.

Celery's own retry counter (`request.retries`) counts only the retries a task asked for. A task
whose worker was killed (SIGKILL, the kernel's OOM killer) comes back after the visibility
timeout with the same counter, so a job that kills its worker every time would loop forever.
Counting every delivery of a task id (retries keep the id; a replay sends a new one) bounds
both, as Pub/Sub's delivery count does.
"""

from __future__ import annotations

import contextlib
from typing import Any

from dal.errors import StoreUnavailable
from dal.redis.client import unavailable_on_outage

DEFAULT_TTL_S = 7 * 24 * 3600


class DeliveryCounter:
    def __init__(self, client: Any, *, prefix: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        """`client`: a redis-py client (dal.redis.client); keys are PREFIX + task id."""
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    def count(self, task_id: str) -> int:
        """Count one more delivery of `task_id`; returns how many there have been, this one
        included. Raises StoreUnavailable when Redis is down."""
        key = self._prefix + task_id
        with unavailable_on_outage("the delivery counter"):
            pipe = self._client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, self._ttl_s)
            value, _ = pipe.execute()
        return int(value)

    def forget(self, task_id: str) -> None:
        """The task is done: drop its count (best effort, it expires anyway)."""
        with contextlib.suppress(StoreUnavailable), unavailable_on_outage("the counter"):
            self._client.delete(self._prefix + task_id)
