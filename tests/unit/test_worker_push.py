"""The worker's push endpoints over in-process HTTP, with memory adapters and a pattern model."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dal.errors import GenerationError
from dal.records import DEAD_LETTERED, Job, JobError, JobParams, JobStatus
from dal.settings import Settings
from gpu_worker.app import create_worker_app
from gpu_worker.wiring import WorkerServices, build_worker_services
from tests.fakes import PatternGenerator


def envelope(
    job_id: str | None, *, message_id: str = "m1", attempt: int | None = None
) -> dict[str, Any]:
    data = json.dumps({"job_id": job_id}).encode() if job_id else b"garbage"
    body: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": {"job_id": job_id} if job_id else {},
            "messageId": message_id,
        },
        "subscription": "projects/local-project/subscriptions/jobs-worker",
    }
    if attempt is not None:
        body["deliveryAttempt"] = attempt
    return body


@dataclass
class Worker:
    client: TestClient
    services: WorkerServices
    generator: PatternGenerator

    def add_job(self, job_id: str = "job1", steps: int = 3) -> Job:
        job = Job(
            id=job_id,
            owner="alice",
            model="pattern",
            params=JobParams(
                prompt="p",
                width=64,
                height=64,
                num_inference_steps=steps,
                guidance_scale=1.0,
                seed=1,
            ),
        )
        return self.services.jobs.create(job)


@pytest.fixture
def worker() -> Iterator[Worker]:
    settings = Settings(
        app_env="test",
        job_queue="pubsub",
        progress_write_interval_s=0,
        cancel_check_interval_s=0,
        duplicate_wait_s=10,
    )
    generator = PatternGenerator()
    services = build_worker_services(settings, generator=generator)
    with TestClient(create_worker_app(services=services)) as client:
        yield Worker(client=client, services=services, generator=generator)
    services.close()


class TestPushEndpoint:
    def test_a_delivery_runs_the_job_and_acknowledges(self, worker: Worker) -> None:
        """A push for a queued job generates it and answers 204."""
        worker.add_job()
        response = worker.client.post("/pubsub/push", json=envelope("job1"))
        assert response.status_code == 204
        job = worker.services.jobs.get("job1")
        assert job.status == JobStatus.SUCCEEDED and len(job.images) == 1

    def test_a_redelivery_of_a_finished_job_is_acknowledged_without_a_run(
        self, worker: Worker
    ) -> None:
        """Duplicates are acknowledged and generate nothing."""
        worker.add_job()
        worker.client.post("/pubsub/push", json=envelope("job1"))
        response = worker.client.post("/pubsub/push", json=envelope("job1", message_id="m2"))
        assert response.status_code == 204
        assert len(worker.generator.calls) == 1

    def test_ten_concurrent_deliveries_run_once_and_all_acknowledge(self, worker: Worker) -> None:
        """The same message pushed 10 times at once: one generation, ten 2xx answers."""
        worker.add_job(steps=20)
        barrier = threading.Barrier(10)
        codes: list[int] = []

        def deliver() -> None:
            barrier.wait()
            codes.append(worker.client.post("/pubsub/push", json=envelope("job1")).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [204] * 10
        assert len(worker.generator.calls) == 1

    def test_a_transient_failure_asks_for_redelivery(self, worker: Worker) -> None:
        """A retryable error answers 5xx and leaves the job queued for the next delivery."""
        worker.add_job()
        worker.generator.fail_with = GenerationError("out_of_memory", "OOM", retryable=True)
        assert worker.client.post("/pubsub/push", json=envelope("job1")).status_code == 503
        assert worker.services.jobs.get("job1").status == JobStatus.QUEUED
        worker.generator.fail_with = None
        assert worker.client.post("/pubsub/push", json=envelope("job1")).status_code == 204
        assert worker.services.jobs.get("job1").status == JobStatus.SUCCEEDED

    def test_a_permanent_failure_is_acknowledged(self, worker: Worker) -> None:
        """A job that cannot succeed is failed and its message acknowledged."""
        worker.add_job()
        worker.generator.fail_with = GenerationError("invalid_parameters", "no", retryable=False)
        assert worker.client.post("/pubsub/push", json=envelope("job1")).status_code == 204
        assert worker.services.jobs.get("job1").status == JobStatus.FAILED

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"{}",
            b'{"message": {}}',
            b'{"message": {"messageId": "m", "data": "***not base64***"}}',
        ],
    )
    def test_a_malformed_envelope_is_400(self, worker: Worker, body: bytes) -> None:
        """Bodies that are not push envelopes are refused."""
        response = worker.client.post(
            "/pubsub/push", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400

    def test_poison_messages_are_acknowledged(self, worker: Worker) -> None:
        """A message naming no job, or a job that does not exist, never loops."""
        assert worker.client.post("/pubsub/push", json=envelope(None)).status_code == 204
        assert worker.client.post("/pubsub/push", json=envelope("ghost")).status_code == 204
        assert worker.generator.calls == []


class TestDeadLetterEndpoint:
    def test_a_dead_letter_fails_the_job_as_dead_lettered(self, worker: Worker) -> None:
        """The dead-letter push marks a job tried MAX_DELIVERY_ATTEMPTS times
        failed/dead_lettered with the attempt count."""
        worker.add_job()
        for _ in range(worker.services.settings.max_delivery_attempts):
            worker.services.jobs.claim("job1", lease_s=60)
            worker.services.jobs.release("job1", error=JobError("out_of_memory", "CUDA OOM"))
        body = envelope("job1")
        body["message"]["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] = "5"
        assert worker.client.post("/pubsub/dead-letter", json=body).status_code == 204
        job = worker.services.jobs.get("job1")
        assert job.status == JobStatus.FAILED
        assert job.error is not None and job.error.code == DEAD_LETTERED
        assert "5 delivery attempts" in job.error.message

    def test_a_dead_letter_for_a_finished_job_changes_nothing(self, worker: Worker) -> None:
        """A late dead letter does not undo a success."""
        worker.add_job()
        worker.client.post("/pubsub/push", json=envelope("job1"))
        assert worker.client.post("/pubsub/dead-letter", json=envelope("job1")).status_code == 204
        assert worker.services.jobs.get("job1").status == JobStatus.SUCCEEDED

    def test_a_dead_letter_of_a_job_its_messages_never_brought_to_a_worker_leaves_it_queued(
        self, worker: Worker
    ) -> None:
        """Every delivery failed before a worker ran it (all of them down): the job still
        needs a GPU, and the sweep hands it to the queue again."""
        worker.add_job()
        body = envelope("job1")
        body["message"]["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] = "5"
        assert worker.client.post("/pubsub/dead-letter", json=body).status_code == 204
        assert worker.services.jobs.get("job1").status == JobStatus.QUEUED


class TestProbes:
    def test_ready_once_the_model_is_loaded(self, worker: Worker) -> None:
        """healthz and readyz answer 200 with every check ok."""
        assert worker.client.get("/healthz").status_code == 200
        ready = worker.client.get("/readyz")
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"model", "job_store", "blob_store"}


class TestPushAuthentication:
    def test_with_oidc_only_pubsubs_signed_requests_run_jobs(self, worker: Worker) -> None:
        """In cloud profiles a push without a valid token is 401 and runs nothing."""
        from gpu_worker.push_auth import OidcPushAuth
        from tests.unit.test_push_auth import (
            AUDIENCE,
            CERTS_URL,
            PUSH_ACCOUNT,
            LocalKeyEndpoint,
            make_key,
            token,
        )

        key = make_key("k1")
        worker.services.push_auth = OidcPushAuth(
            audience=AUDIENCE,
            service_account_email=PUSH_ACCOUNT,
            certs_url=CERTS_URL,
            request_factory=lambda: LocalKeyEndpoint(key),
        )
        worker.add_job()
        refused = worker.client.post("/pubsub/push", json=envelope("job1"))
        forged = worker.client.post(
            "/pubsub/push",
            json=envelope("job1"),
            headers={"Authorization": f"Bearer {token(make_key('k1'))}"},
        )
        assert (refused.status_code, forged.status_code) == (401, 401)
        assert worker.services.jobs.get("job1").status == JobStatus.QUEUED
        accepted = worker.client.post(
            "/pubsub/push",
            json=envelope("job1"),
            headers={"Authorization": f"Bearer {token(key)}"},
        )
        assert accepted.status_code == 204
        assert worker.services.jobs.get("job1").status == JobStatus.SUCCEEDED
