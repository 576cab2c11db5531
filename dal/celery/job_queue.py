"""Publishes jobs as Celery tasks (`txt2img.run_job(job_id, traceparent=...)`) to the queue
CELERY_QUEUE. The task is sent by name: the API imports neither the worker's task module nor
torch. The W3C trace context travels as a keyword argument, so retries keep it too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import redis.exceptions

from dal.celery.app import TASK_NAME
from dal.errors import QueueUnavailable
from dal.records import Job
from dal.trace_context import current_traceparent

log = logging.getLogger(__name__)

# What a publish raises when the broker cannot take the message: kombu wraps connection
# errors in OperationalError; the Redis client's own may surface around it.
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class CeleryJobQueue:
    def __init__(self, app: Any, *, queue: str | None = None) -> None:
        self._app = app
        self._queue = queue or str(app.conf.task_default_queue)

    def enqueue(self, job: Job) -> None:
        self.publish(job.id)

    def publish(self, job_id: str, *, traceparent: str | None = None) -> str:
        """Send one task for the job; returns the task id. Raises QueueUnavailable when the
        broker does not take it (after the app's bounded publish retry policy)."""
        traceparent = traceparent or current_traceparent()
        kwargs = {"traceparent": traceparent} if traceparent else {}
        try:
            result = self._app.send_task(TASK_NAME, args=[job_id], kwargs=kwargs, queue=self._queue)
        except PUBLISH_ERRORS as exc:
            raise QueueUnavailable(f"could not publish job {job_id} to Celery: {exc}") from exc
        task_id = str(result.id)
        log.debug("published job %s as task %s on %s", job_id, task_id, self._queue)
        return task_id


def retry_countdown(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    visibility_timeout_s: float,
    random_fraction: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before delivery `attempt + 1`: exponential backoff from `base_s`,
    capped at `max_s`, with jitter (between half and all of it) so that tasks failing together
    do not come back together.

    Also capped at half the visibility timeout: a worker holds a task that waits for its
    countdown unacknowledged, and one held past the visibility timeout is delivered twice."""
    ceiling = min(max_s, visibility_timeout_s / 2)
    delay = min(ceiling, base_s * 2.0 ** max(0, attempt - 1))
    return delay * (0.5 + 0.5 * random_fraction())
