from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.wiring import Services, build_services
from dal.memory import MemoryJobQueue
from dal.settings import Settings
from gpu_worker.runner import JobRunner, RunnerConfig
from tests.fakes import PatternGenerator

ALICE_KEY = "alice-test-key-0123456789"


@dataclass
class ApiHarness:
    client: TestClient
    services: Services
    generator: PatternGenerator
    bob_key: str

    def headers(self, key: str = ALICE_KEY, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", **extra}

    def run_pending_jobs(self) -> list[str]:
        """Play the worker: run every job the API has enqueued so far."""
        queue = self.services.queue
        assert isinstance(queue, MemoryJobQueue)
        runner = JobRunner(
            jobs=self.services.jobs,
            blobs=self.services.blobs,
            generator=self.generator,
            finisher=self.services.core.finisher,
            config=RunnerConfig(progress_write_interval_s=0, cancel_check_interval_s=0),
        )
        ids = queue.take_all()
        for job_id in ids:
            runner.run(job_id)
        return ids


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "app_env": "test",
        "bootstrap_api_key": ALICE_KEY,
        "bootstrap_api_key_owner": "alice",
        "max_body_bytes": 4096,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def api(settings: Settings) -> Iterator[ApiHarness]:
    generator = PatternGenerator()
    services = build_services(settings, generator=generator)
    bob = services.keys.issue(owner="bob").secret
    app = create_app(services=services)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield ApiHarness(client=client, services=services, generator=generator, bob_key=bob)
    services.close()
