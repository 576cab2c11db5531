"""Trace context: parsed from the caller, carried into the job's message."""

from __future__ import annotations

from dal.memory import MemoryJobQueue
from dal.pubsub.message import encode
from dal.records import Job, JobParams
from dal.trace_context import from_headers, set_traceparent, trace_id
from tests.unit.api.conftest import ApiHarness

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TestTraceContext:
    def test_callers_traceparent_is_kept(self) -> None:
        """A valid W3C traceparent from the caller is used as is."""
        assert from_headers(CALLER, None) == CALLER

    def test_cloud_run_header_is_converted(self) -> None:
        """X-Cloud-Trace-Context becomes a traceparent with the same trace id."""
        made = from_headers(None, "105445aa7843bc8bf206b12000100000/1;o=1")
        assert trace_id(made) == "105445aa7843bc8bf206b12000100000"
        assert made.endswith("-01")

    def test_garbage_gets_a_fresh_context(self) -> None:
        """Invalid headers are replaced by a new, valid context."""
        assert trace_id(from_headers("nonsense", "also nonsense")) is not None

    def test_the_message_carries_the_current_context(self) -> None:
        """A job published during a request carries that request's traceparent."""
        set_traceparent(CALLER)
        job = Job(id="j", owner="o", model="m", params=JobParams("p", 64, 64, 2, 1.0, 1))
        _, attributes = encode(job)
        assert attributes["traceparent"] == CALLER
        assert attributes["job_id"] == "j"
        set_traceparent(None)

    def test_api_echoes_the_trace_context(self, api: ApiHarness) -> None:
        """Responses carry the request's traceparent."""
        response = api.client.get("/v1/jobs", headers=api.headers(traceparent=CALLER))
        assert response.headers["traceparent"] == CALLER
        assert isinstance(api.services.queue, MemoryJobQueue)
