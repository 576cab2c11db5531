"""Fixtures for the Celery adapter tests: real Redis as broker, a real Celery worker started
in this process (threads pool) running the project's task through WorkerServices built with
PatternGenerator (no torch), on the memory job store or PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from dal.redis.client import make_redis_client
from dal.settings import Settings
from gpu_worker.celery_worker import CeleryRuntime, build_runtime, create_app
from gpu_worker.wiring import WorkerServices, build_worker_services
from tests.fakes import PatternGenerator
from tests.integration.postgres_service import postgres_admin_url
from tests.integration.redis_service import redis_url, unique_prefix

__all__ = ["postgres_admin_url", "redis_url"]


def celery_settings(redis_url: str, **overrides: Any) -> Settings:
    """Settings of one test: its own queue, dead-letter list and key prefix on the shared
    Redis, tiny backoffs, the smallest attempt count the settings allow (5)."""
    prefix = unique_prefix()
    values: dict[str, Any] = {
        "app_env": "test",
        "job_queue": "celery",
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "celery_queue": f"jobs-{uuid.uuid4().hex[:8]}",
        "celery_dead_letter_key": f"{prefix}dead-letters",
        "celery_retry_backoff_s": 0.05,
        "celery_retry_backoff_max_s": 0.2,
        "celery_worker_concurrency": 2,
        "max_delivery_attempts": 5,
        "progress_write_interval_s": 0,
        "duplicate_wait_s": 0.5,
        "job_lease_s": 30,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class CeleryWorker:
    app: Any
    runtime: CeleryRuntime

    @property
    def services(self) -> WorkerServices:
        return self.runtime.services

    @property
    def generator(self) -> PatternGenerator:
        generator = self.runtime.services.generator
        assert isinstance(generator, PatternGenerator)
        return generator


@contextmanager
def celery_worker(settings: Settings) -> Iterator[CeleryWorker]:
    """A Celery worker in this process consuming the settings' queue; the services are built
    once, as the real worker does, and shared by the task threads."""
    from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]

    services = build_worker_services(settings, generator=PatternGenerator())
    runtime = build_runtime(settings, services=services)
    app = create_app(settings, lambda: runtime)
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=settings.celery_worker_concurrency,
            perform_ping_check=False,
            loglevel="INFO",
            shutdown_timeout=30,
        ):
            yield CeleryWorker(app=app, runtime=runtime)
    finally:
        runtime.close()
        services.close()
        app.close()
        _delete_keys(settings)


def _delete_keys(settings: Settings) -> None:
    client = make_redis_client(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def make_worker() -> Callable[[Settings], Any]:
    return celery_worker
