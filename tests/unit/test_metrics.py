"""Prometheus /metrics on the API (embedded: it runs the inline worker too) and on the worker."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.app import create_app
from api.wiring import build_services
from dal.memory import MemoryJobStore
from dal.records import Job, JobParams
from dal.settings import Settings
from dal.telemetry.collectors import GpuMemoryCollector, JobsByStatusCollector
from dal.telemetry.metrics_endpoint import scrape_allowed
from gpu_worker.app import create_worker_app
from gpu_worker.batching import BatchingGenerator
from gpu_worker.wiring import build_worker_services
from tests.fakes import PatternGenerator

KEY = "metrics-test-key-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def params() -> JobParams:
    return JobParams(
        prompt="p", width=64, height=64, num_inference_steps=2, guidance_scale=1.0, seed=1
    )


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def embedded() -> Iterator[TestClient]:
    """The API with the inline queue and a batching pattern model, in the test profile."""
    settings = Settings(
        app_env="test",
        job_queue="inline",
        bootstrap_api_key=KEY,
        inline_workers=2,
        progress_write_interval_s=0,
        cancel_check_interval_s=0,
    )
    generator = BatchingGenerator(PatternGenerator(), max_batch_images=4, max_wait_s=0)
    services = build_services(settings, generator=generator)
    with TestClient(create_app(services=services)) as client:
        yield client
    services.close()
    generator.close()


class TestApiMetrics:
    def test_after_a_job_every_listed_series_moves(self, embedded: TestClient) -> None:
        """One 2-image job: requests by route template, jobs submitted and finished, queue
        wait, generation, batch size, images, pipeline runs, images/s, jobs by status."""
        before = scrape(embedded)
        response = embedded.post(
            "/v1/jobs",
            json={"prompt": "a lighthouse", "num_images": 2, "num_inference_steps": 2},
            headers={"Authorization": f"Bearer {KEY}", "Prefer": "wait=10"},
        )
        assert response.status_code == 200 and response.json()["status"] == "succeeded"
        job_id = response.json()["id"]
        assert embedded.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}
        ).is_success
        after = scrape(embedded)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "txt2img_http_request_duration_seconds_count"
        assert delta(requests, method="POST", route="/v1/jobs", status="200") == 1
        # One series per route template, not per job.
        assert delta(requests, method="GET", route="/v1/jobs/{job_id}", status="200") == 1
        assert not any(job_id in str(labels) for _, labels in after)
        assert delta("txt2img_jobs_submitted_total", outcome="created") == 1
        assert delta("txt2img_jobs_finished_total", status="succeeded") == 1
        assert delta("txt2img_job_runs_total", outcome="succeeded") == 1
        assert delta("txt2img_job_queue_wait_seconds_count") == 1
        assert 0 <= delta("txt2img_job_queue_wait_seconds_sum") < 10
        assert delta("txt2img_generation_seconds_count") == 1
        assert delta("txt2img_batch_size_images_count") == 1
        assert delta("txt2img_batch_size_images_sum") == 2
        assert delta("txt2img_images_generated_total") == 2
        assert delta("txt2img_pipeline_runs_total") == 1
        assert delta("txt2img_pipeline_seconds_count") == 1
        assert value(after, "txt2img_images_per_second") > 0
        assert value(after, "txt2img_jobs", status="queued") == 0
        assert value(after, "txt2img_jobs", status="running") == 0
        for gauge in ("txt2img_model_load_seconds", "txt2img_model_warm_up_seconds"):
            assert (gauge, frozenset()) in after

    def test_a_bearer_token_protects_metrics(self) -> None:
        """With METRICS_BEARER_TOKEN, /metrics answers 401 problem+json without the token."""
        settings = Settings(app_env="test", metrics_bearer_token="scrape-secret")
        with TestClient(create_app(settings)) as client:
            refused = client.get("/metrics")
            wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == wrong.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"
            assert "txt2img_" not in refused.text
            samples = scrape(client, Authorization="Bearer scrape-secret")
        assert ("txt2img_pipeline_runs_total", frozenset()) in samples

    def test_a_production_profile_closes_metrics_without_a_token(self) -> None:
        """The public API shows no traffic figures to anyone in staging/prod by default; the
        same settings in a development profile serve them."""
        closed = {"open_without_token": False}
        assert not scrape_allowed(None, None, **closed)
        assert not scrape_allowed("Bearer anything", None, **closed)
        assert scrape_allowed(None, None)
        token = SecretStr("scrape-secret")
        assert scrape_allowed("Bearer scrape-secret", token, **closed)
        assert not scrape_allowed("Bearer nope", token, **closed)

    def test_the_api_route_follows_the_profile(self) -> None:
        settings = Settings(app_env="test")
        object.__setattr__(settings, "app_env", "prod")  # the profile's rule, not its checks
        with TestClient(create_app(settings)) as client:
            refused = client.get("/metrics")
        assert refused.status_code == 401
        assert "txt2img_" not in refused.text


class TestWorkerMetrics:
    def test_the_push_endpoint_is_timed_and_its_job_counted(self) -> None:
        """A push delivery shows under its route, and the worker's job series move."""
        settings = Settings(app_env="test", job_queue="pubsub", progress_write_interval_s=0)
        generator = BatchingGenerator(PatternGenerator(), max_wait_s=0)
        services = build_worker_services(settings, generator=generator)
        services.jobs.create(
            Job(
                id="pushed-job",
                owner="alice",
                model="pattern",
                params=params(),
            )
        )
        data = base64.b64encode(json.dumps({"job_id": "pushed-job"}).encode()).decode()
        body = {"message": {"data": data, "attributes": {}, "messageId": "m1"}}
        with TestClient(create_worker_app(services=services)) as client:
            before = scrape(client)
            assert client.post("/pubsub/push", json=body).status_code == 204
            after = scrape(client)
        services.close()
        generator.close()
        pushes = ("txt2img_http_request_duration_seconds_count", "POST", "/pubsub/push", "204")

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta(pushes[0], method=pushes[1], route=pushes[2], status=pushes[3]) == 1
        assert delta("txt2img_job_runs_total", outcome="succeeded") == 1
        assert delta("txt2img_images_generated_total") == 1
        assert delta("txt2img_pipeline_runs_total") == 1


class TestCollectors:
    def test_jobs_by_status_is_capped_and_cached(self) -> None:
        """The gauge reads the store at most once per TTL and never more than CAP jobs."""
        store = MemoryJobStore()
        now = [0.0]
        collector = JobsByStatusCollector(cap=2, ttl_s=30, clock=lambda: now[0])
        collector.track(store)

        def counts() -> dict[str, float]:
            [family] = collector.collect()
            return {s.labels["status"]: s.value for s in family.samples}

        assert counts() == {"queued": 0, "running": 0}
        for index in range(3):
            store.create(
                Job(
                    id=f"j{index}",
                    owner="o",
                    model="m",
                    params=params(),
                )
            )
        assert counts() == {"queued": 0, "running": 0}  # cached
        now[0] = 31
        assert counts() == {"queued": 2, "running": 0}  # capped
        collector.untrack(store)
        assert counts() == {}

    def test_gpu_memory_is_reported_per_device_only_with_cuda(self) -> None:
        """With CUDA in use: allocated, peak and reserved bytes per device; without: nothing."""
        fake_cuda: Any = SimpleNamespace(
            device_count=lambda: 1,
            memory_allocated=lambda i: 1_000,
            max_memory_allocated=lambda i: 5_000,
            memory_reserved=lambda i: 8_000,
        )
        families = list(GpuMemoryCollector(lambda: fake_cuda).collect())
        values = {f.name: [(s.labels, s.value) for s in f.samples] for f in families}
        assert values == {
            "txt2img_gpu_memory_allocated_bytes": [({"device": "cuda:0"}, 1000.0)],
            "txt2img_gpu_memory_peak_bytes": [({"device": "cuda:0"}, 5000.0)],
            "txt2img_gpu_memory_reserved_bytes": [({"device": "cuda:0"}, 8000.0)],
        }
        assert list(GpuMemoryCollector(lambda: None).collect()) == []
