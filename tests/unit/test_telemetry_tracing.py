"""OpenTelemetry behind OTEL_ENABLED: one trace from the API request through the publish to the
worker's run and the pipeline call, recorded by an in-memory exporter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from api.app import create_app
from dal.memory import MemoryBlobStore, MemoryJobStore
from dal.pubsub.job_queue import PubSubJobQueue
from dal.records import Job, JobParams
from dal.settings import Settings
from dal.telemetry import configure_tracing, shutdown_tracing, span
from dal.telemetry.logging_setup import make_log_handler
from dal.trace_context import current_traceparent, set_traceparent
from dal.url_signing import HmacUrlSigner
from gpu_worker.batching import BatchingGenerator
from gpu_worker.runner import JobRunner, RunnerConfig, RunOutcome
from tests.fakes import PatternGenerator

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
KEY = "tracing-test-key-0123456789"


class RecordingPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        self.messages.append((data, attributes))
        done: Future[str] = Future()
        done.set_result(f"m{len(self.messages)}")
        return done


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing(
        Settings(app_env="test", otel_enabled=True), service_name="test", exporter=exporter
    )
    set_traceparent(None)
    yield exporter
    shutdown_tracing()
    set_traceparent(None)


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {s.name: s for s in exporter.get_finished_spans()}


class TestTracing:
    def test_off_by_default_spans_change_nothing(self) -> None:
        """Without OTEL_ENABLED, span() is a no-op and the traceparent stays the caller's."""
        assert configure_tracing(Settings(app_env="test"), service_name="test") is None
        set_traceparent(TRACEPARENT)
        with span("anything") as opened:
            opened.set_attribute("k", "v")
            assert current_traceparent() == TRACEPARENT
        set_traceparent(None)

    def test_an_api_request_span_continues_the_callers_traceparent(
        self, spans: InMemorySpanExporter
    ) -> None:
        """A server span named by route template, child of the incoming span, same trace."""
        settings = Settings(app_env="test", bootstrap_api_key=KEY)
        with TestClient(create_app(settings)) as client:
            response = client.post(
                "/v1/jobs",
                json={"prompt": "p"},
                headers={"Authorization": f"Bearer {KEY}", "traceparent": TRACEPARENT},
            )
        assert response.status_code == 202
        server = by_name(spans)["POST /v1/jobs"]
        assert server.kind == SpanKind.SERVER
        assert f"{server.context.trace_id:032x}" == TRACE_ID
        assert f"{server.parent.span_id:016x}" == CALLER_SPAN
        assert server.attributes["http.route"] == "/v1/jobs"
        assert server.attributes["http.response.status_code"] == 202

    def test_publish_run_and_pipeline_are_one_trace(self, spans: InMemorySpanExporter) -> None:
        """publish → (message attribute) → run job → generate → pipeline, each the child of
        the one before; a worker log line carries its span's id."""
        jobs, publisher = MemoryJobStore(), RecordingPublisher()
        job = jobs.create(
            Job(
                id="traced-job",
                owner="alice",
                model="pattern",
                params=JobParams(
                    prompt="p",
                    width=64,
                    height=64,
                    num_inference_steps=2,
                    guidance_scale=1.0,
                    seed=1,
                ),
            )
        )
        set_traceparent(TRACEPARENT)  # as the API request's middleware leaves it
        PubSubJobQueue(publisher, "projects/p/topics/jobs").enqueue(job)
        [(_, attributes)] = publisher.messages

        stream = io.StringIO()
        runner_log = logging.getLogger("gpu_worker.runner")
        handler = make_log_handler(Settings(app_env="test", log_format="json"), stream)
        runner_log.addHandler(handler)
        saved_level = runner_log.level
        runner_log.setLevel(logging.INFO)
        generator = BatchingGenerator(PatternGenerator(), max_wait_s=0)
        try:
            set_traceparent(attributes["traceparent"])  # as the push endpoint does
            runner = JobRunner(
                jobs=jobs,
                blobs=MemoryBlobStore(HmacUrlSigner("secret")),
                generator=generator,
                config=RunnerConfig(progress_write_interval_s=0, cancel_check_interval_s=0),
            )
            assert runner.run(job.id) == RunOutcome.SUCCEEDED
        finally:
            runner_log.removeHandler(handler)
            runner_log.setLevel(saved_level)
            generator.close()

        named = by_name(spans)
        publish, run = named["publish jobs"], named["run job"]
        generate, pipeline = named["generate"], named["pipeline"]
        assert publish.kind == SpanKind.PRODUCER
        assert f"{publish.parent.span_id:016x}" == CALLER_SPAN
        assert attributes["traceparent"].split("-")[2] == f"{publish.context.span_id:016x}"
        assert run.parent.span_id == publish.context.span_id
        assert generate.parent.span_id == run.context.span_id
        assert pipeline.parent.span_id == generate.context.span_id
        for opened in (publish, run, generate, pipeline):
            assert f"{opened.context.trace_id:032x}" == TRACE_ID
        assert run.attributes["txt2img.outcome"] == "succeeded"
        assert pipeline.attributes["txt2img.batch_images"] == 1

        [line] = [json.loads(x) for x in stream.getvalue().splitlines() if "succeeded" in x]
        assert line["job_id"] == "traced-job"
        assert line["logging.googleapis.com/spanId"] == f"{run.context.span_id:016x}"
        assert line["logging.googleapis.com/trace"].endswith(TRACE_ID)
