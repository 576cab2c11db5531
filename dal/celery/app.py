"""The Celery app every process of the `selfhosted` profile shares: API (publishes), worker
(consumes), admin command and `celery inspect` (look). Only configuration lives here; the task
itself is registered by the worker (gpu_worker/celery_worker.py) and the API sends it by name.

Delivery promises and the settings that keep them:

* late acknowledgement (`task_acks_late`): a task is acknowledged only after the job record is
  final (or the task was re-sent for a retry), so a worker that dies mid-generation loses
  nothing: the broker redelivers the task;
* `visibility_timeout` (CELERY_VISIBILITY_TIMEOUT_S): Redis has no consumer liveness, so an
  unacknowledged task is handed out again once it has been out this long. It must stay above
  the longest generation, or a healthy worker's job is delivered twice (the job's claim and
  lease keep that from generating twice, but the second delivery waits and retries);
* `worker_prefetch_multiplier=1`: a GPU worker reserves no more tasks than it runs, so a long
  job never holds back tasks another worker could start;
* no result backend: the job store holds every job's state.
"""

from __future__ import annotations

from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from dal.settings import Settings

TASK_NAME = "txt2img.run_job"

# How long publishing may wait for the broker: a submit must fail fast (503) rather than hang.
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0
# On a publish that hits a connection error: reconnect and try again at most this often.
PUBLISH_RETRY_POLICY: dict[str, float] = {
    "max_retries": 2,
    "interval_start": 0.0,
    "interval_step": 0.25,
    "interval_max": 0.5,
}


def broker_url(settings: Settings) -> str:
    return settings.celery_broker_url or settings.redis_url


def dead_letter_redis_url(settings: Settings) -> str:
    """The Redis that holds the dead-letter list and the delivery counters: the broker when
    it is a Redis, else REDIS_URL."""
    url = broker_url(settings)
    return url if url.split("://", 1)[0] in ("redis", "rediss", "unix") else settings.redis_url


def key_prefix(settings: Settings) -> str:
    """Prefix of every key Celery writes to Redis (queues, unacked tasks, control channels), so
    several stacks can share one Redis the way the other Redis adapters do."""
    return f"{settings.redis_key_prefix}celery:"


def restore_interval_s(visibility_timeout_s: float) -> int:
    """How often a worker looks for tasks whose visibility timeout has passed (their worker
    died): about a tenth of the timeout, between 1 and 10 s."""
    return int(min(10, max(1, visibility_timeout_s // 10)))


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = settings.celery_visibility_timeout_s
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "global_keyprefix": key_prefix(settings),
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": SOCKET_TIMEOUT_S,
            "socket_keepalive": True,
            # Every worker sweeps for expired unacknowledged tasks this often (kombu's default
            # is every 100 s, too coarse for short visibility timeouts).
            "unacked_restore_interval": restore_interval_s(visibility),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_timeout": CONNECT_TIMEOUT_S,
        "broker_connection_retry_on_startup": True,
        # A worker waits for its broker as long as it takes (the API publishes with a bounded
        # retry policy instead and answers 503).
        "broker_connection_max_retries": None,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # Job state lives in the job store.
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.celery_queue,
        "task_routes": {TASK_NAME: {"queue": settings.celery_queue}},
        # Redis acknowledges through any connection, so a task that outlives a broker
        # reconnect can still be acknowledged: let it finish.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # The worker configures logging itself (format, redaction).
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def make_celery_app(settings: Settings, *, main: str = "txt2img") -> Celery:
    """A Celery app configured from settings. Connects to nothing until it is used."""
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
