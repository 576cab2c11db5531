"""`python -m gpu_worker.celery_worker`: the GPU worker of the `selfhosted` profile (Celery on
Redis). It loads and warms the model, then consumes CELERY_QUEUE with the threads pool
(CELERY_WORKER_CONCURRENCY threads), so every task shares the one loaded model and its batches.

The task `txt2img.run_job(job_id, traceparent=None)` calls `WorkerServices.run_job`, the same
runner the Pub/Sub push endpoint and pull loop call, and turns its outcome into Celery's terms:

* succeeded, failed, canceled, duplicate, not found: the task returns and is acknowledged;
* retry (a transient failure) or in progress (another worker holds a live lease): the task is
  retried after an exponential backoff with jitter (CELERY_RETRY_BACKOFF_S, doubling up to
  CELERY_RETRY_BACKOFF_MAX_S);
* either of those on delivery MAX_DELIVERY_ATTEMPTS: dead-lettered. The job ends
  `failed/dead_lettered` and the task goes onto the CELERY_DEAD_LETTER_KEY list, which
  `txt2img-admin dead-letters list|replay|purge` works on.

Deliveries are counted per task id in Redis (dal.celery.deliveries), so a task whose worker was
killed (it comes back after CELERY_VISIBILITY_TIMEOUT_S) counts too, and a job that kills its
worker every time is dead-lettered instead of looping.

Extra arguments are passed on to `celery worker` (e.g. `--hostname gpu1@%h`). To look at the
queue and the workers, `celery -A gpu_worker.celery_worker:app inspect active` and friends, or
Flower (docs/selfhosted.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dal.celery import (
    TASK_NAME,
    CeleryDeadLetterBox,
    DeliveryCounter,
    dead_letter_redis_url,
    make_celery_app,
    retry_countdown,
)
from dal.celery.app import key_prefix
from dal.errors import JobNotFound, StoreUnavailable
from dal.factory import close_all
from dal.records import DEAD_LETTERED, is_dead_lettered, utcnow
from dal.redis.client import make_redis_client
from dal.settings import Settings
from dal.telemetry import configure_logging, configure_tracing, exporting_telemetry, job_context
from dal.trace_context import set_traceparent
from gpu_worker.wiring import WorkerServices, build_worker_services

# Named, not __name__: run as `python -m`, this module is __main__.
log = logging.getLogger("gpu_worker.celery_worker")

DEFAULT_NODE_NAME = "txt2img@%h"
# Prometheus' conventional exporter port; METRICS_PORT overrides it (0: no server).
DEFAULT_METRICS_PORT = 9464


@dataclass
class CeleryRuntime:
    """What the task needs, built once per worker process and shared by its task threads."""

    services: WorkerServices
    dead_letters: CeleryDeadLetterBox
    deliveries: DeliveryCounter
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def close(self) -> None:
        """Close what the runtime opened (not the services, which their builder owns)."""
        close_all(self._closers)


def build_runtime(settings: Settings, *, services: WorkerServices | None = None) -> CeleryRuntime:
    """The worker services (loading and warming the model unless given) plus the Redis-side
    bookkeeping: dead-letter list and delivery counter."""
    if services is None:
        services = build_worker_services(settings)
    client = make_redis_client(dead_letter_redis_url(settings))
    return CeleryRuntime(
        services=services,
        dead_letters=CeleryDeadLetterBox(client, settings.celery_dead_letter_key),
        deliveries=DeliveryCounter(client, prefix=f"{key_prefix(settings)}deliveries:"),
        _closers=[client.close],
    )


class LazyRuntime:
    """The runtime of this process, built on first use under a lock (for `celery -A ...
    worker` started without this module's main, which builds it before consuming)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._runtime: CeleryRuntime | None = None

    def set(self, runtime: CeleryRuntime) -> None:
        with self._lock:
            self._runtime = runtime

    def __call__(self) -> CeleryRuntime:
        with self._lock:
            if self._runtime is None:
                self._runtime = build_runtime(self._settings)
            return self._runtime

    def close(self) -> None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()
            runtime.services.close()


def register_tasks(app: Any, runtime: Callable[[], CeleryRuntime]) -> Any:
    """Register `txt2img.run_job` on `app`; returns the task."""

    def run_job(task: Any, job_id: str, traceparent: str | None = None) -> str:
        try:
            current = runtime()
        except Exception as exc:
            # Only when the runtime is built lazily (`celery -A ... worker`): the model or a
            # store is unusable. Keep the task; `main` builds the runtime before consuming.
            log.exception("cannot run job %s: the worker could not be set up", job_id)
            raise task.retry(countdown=60, max_retries=None) from exc
        return deliver(task, current, job_id, traceparent)

    # Our own delivery count bounds the attempts (see `deliver`), so Celery's is unbounded.
    # Not shared: a shared task would be added to every app of the process, bound to this
    # app's runtime.
    return app.task(
        run_job,
        bind=True,
        shared=False,
        name=TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
        ignore_result=True,
    )


def create_app(settings: Settings, runtime: Callable[[], CeleryRuntime]) -> Any:
    """The project's Celery app with the job task registered."""
    app = make_celery_app(settings)
    register_tasks(app, runtime)
    return app


def deliver(task: Any, runtime: CeleryRuntime, job_id: str, traceparent: str | None) -> str:
    """One delivery of a job's task. Returns what happened (the task is acknowledged), or
    raises celery.exceptions.Retry (the task comes back after a countdown)."""
    set_traceparent(traceparent)
    with job_context(job_id):
        return _deliver(task, runtime, job_id)


def _deliver(task: Any, runtime: CeleryRuntime, job_id: str) -> str:
    settings = runtime.settings
    request = task.request
    task_id = str(request.id)
    max_attempts = settings.max_delivery_attempts
    attempt = int(request.retries or 0) + 1
    try:
        attempt = max(attempt, runtime.deliveries.count(task_id))
    except StoreUnavailable as exc:
        log.warning("task %s: cannot count its deliveries (%s); using Celery's", task_id, exc)

    if attempt > max_attempts:
        # The previous delivery never answered: its worker stopped while running it (or
        # while dead-lettering it).
        return _dead_letter(
            task,
            runtime,
            job_id,
            attempts=attempt - 1,
            detail=(
                f"{attempt - 1} delivery attempts ended without an answer "
                "(a worker stopped while running it)"
            ),
        )

    outcome = runtime.services.run_job(job_id)
    log.info(
        "task %s for job %s (delivery %d of at most %d): %s",
        task_id,
        job_id,
        attempt,
        max_attempts,
        outcome.value,
    )
    if outcome.acknowledge:
        runtime.deliveries.forget(task_id)
        return outcome.value
    if attempt >= max_attempts:
        return _dead_letter(
            task,
            runtime,
            job_id,
            attempts=attempt,
            detail=f"the queue gave up after {attempt} delivery attempts",
        )
    countdown = retry_countdown(
        attempt,
        base_s=settings.celery_retry_backoff_s,
        max_s=settings.celery_retry_backoff_max_s,
        visibility_timeout_s=settings.celery_visibility_timeout_s,
    )
    raise task.retry(countdown=countdown, max_retries=max_attempts - 1)


def _dead_letter(
    task: Any, runtime: CeleryRuntime, job_id: str, *, attempts: int, detail: str
) -> str:
    """Out of attempts: fail the job as dead_lettered, then put the task on the dead-letter
    list for the replay command. The job first: if the job store is down, nothing is written
    and the task comes back later (straight here again); the letter follows only once the job
    is final, so a replay finds it failed/dead_lettered."""
    settings = runtime.settings
    request = task.request
    task_id = str(request.id)
    try:
        runtime.services.finisher.dead_letter(job_id, detail)
        job = runtime.services.jobs.get(job_id)
    except JobNotFound:
        log.warning("task %s names job %s, which does not exist; dropped", task_id, job_id)
        runtime.deliveries.forget(task_id)
        return "not_found"
    except StoreUnavailable as exc:
        log.warning("task %s: job store unavailable while dead-lettering: %s", task_id, exc)
        raise task.retry(
            countdown=retry_countdown(
                attempts,
                base_s=settings.celery_retry_backoff_s,
                max_s=settings.celery_retry_backoff_max_s,
                visibility_timeout_s=settings.celery_visibility_timeout_s,
            ),
            max_retries=None,
        ) from exc
    if job.status.is_terminal and not is_dead_lettered(job):
        # It finished after all (e.g. its worker was killed after storing the result).
        log.info(
            "task %s: job %s is already %s; nothing to dead-letter", task_id, job_id, job.status
        )
        runtime.deliveries.forget(task_id)
        return "duplicate"
    last_error = f"{job.error.code}: {job.error.message}" if job.error else detail
    runtime.dead_letters.add(
        job_id=job_id,
        task_id=task_id,
        attempts=attempts,
        queue=settings.celery_queue,
        last_error=last_error,
        at=utcnow(),
        traceparent=(request.kwargs or {}).get("traceparent"),
    )
    runtime.deliveries.forget(task_id)
    log.warning("job %s dead-lettered after %d attempts (task %s)", job_id, attempts, task_id)
    return DEAD_LETTERED


# --- the process --------------------------------------------------------------------------

_module_app: Any = None
_module_runtime: LazyRuntime | None = None
_module_lock = threading.Lock()


def _app_from_environment() -> Any:
    global _module_app, _module_runtime
    with _module_lock:
        if _module_app is None:
            settings = Settings()
            _module_runtime = LazyRuntime(settings)
            _module_app = create_app(settings, _module_runtime)
        return _module_app


def __getattr__(name: str) -> Any:
    """`app`: the project's Celery app from the environment's settings, built on first use
    (for `celery -A gpu_worker.celery_worker:app inspect ...`, Flower, `celery worker`)."""
    if name == "app":
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={settings.celery_worker_concurrency}",
        f"--queues={settings.celery_queue}",
        f"--loglevel={settings.log_level.upper()}",
        # Neither is needed to consume, and both slow the start down.
        "--without-gossip",
        "--without-mingle",
    ]
    if not any(arg in ("-n", "--hostname") or arg.startswith("--hostname=") for arg in extra):
        argv.append(f"--hostname={DEFAULT_NODE_NAME}")
    return argv + extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_worker.celery_worker",
        description="Run the Celery GPU worker; unknown arguments go to `celery worker`.",
    )
    _, extra = parser.parse_known_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = Settings()
    configure_logging(settings)
    configure_tracing(settings, service_name="txt2img-worker")
    if settings.job_queue != "celery":
        raise SystemExit(
            f"JOB_QUEUE={settings.job_queue}: the Celery worker needs JOB_QUEUE=celery "
            "(APP_ENV=selfhosted sets it)"
        )
    global _module_app, _module_runtime
    lazy = LazyRuntime(settings)
    # Load and warm the model before consuming: a worker that cannot is never handed a task.
    lazy.set(build_runtime(settings))
    app = create_app(settings, lazy)
    keep_our_logging(app)
    with _module_lock:
        _module_app, _module_runtime = app, lazy
    argv = worker_argv(settings, extra)
    if settings.resolved_log_format == "json":
        # Celery's banner is printed, not logged: it would be the only non-JSON lines.
        argv = ["--quiet", *argv]
    with exporting_telemetry(settings, settings.worker_host, default_port=DEFAULT_METRICS_PORT):
        try:
            app.worker_main(argv)
        finally:
            lazy.close()


def keep_our_logging(app: Any) -> None:
    """Celery replaces the root logger's handlers and redirects stdout unless someone answers
    its setup_logging signal: answer it, so configure_logging's handler (JSON, job ids,
    redaction) formats Celery's records too."""
    from celery import signals  # type: ignore[import-untyped]

    app.conf.worker_hijack_root_logger = False
    app.conf.worker_redirect_stdouts = False
    signals.setup_logging.connect(_logging_already_configured, weak=False)


def _logging_already_configured(**_: Any) -> None:
    return None


if __name__ == "__main__":
    # Run the imported module's main, so that `gpu_worker.celery_worker` (the name `celery -A`
    # and the task's module state use) is the one copy of this module in the process.
    from gpu_worker.celery_worker import main as _main

    _main()
