"""The OpenAPI document describes error and event-stream answers as they are sent."""

from __future__ import annotations

import json

from api.problems import PROBLEM_MEDIA_TYPE
from tests.unit.api.conftest import ApiHarness

PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_every_error_answer_is_documented_as_problem_json(api: ApiHarness) -> None:
    """4xx/5xx answers (FastAPI's own 422 included) are problem+json with the Problem schema,
    except on the paths of a dialect that answers errors in its own shape (api/problems.py)."""
    spec = api.client.get("/openapi.json").json()
    dialects = api.client.app.state.problem_dialects  # type: ignore[attr-defined]
    errors = {
        (method, path, status): response.get("content")
        for path, item in spec["paths"].items()
        if not any(applies_to(path) for applies_to, _ in dialects)
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    }
    assert ("get", "/v1/jobs/{job_id}", "422") in errors
    # The one error body that is not a problem: readiness reports its failing checks.
    health = errors.pop(("get", "/readyz", "503"))
    assert health == {"application/json": {"schema": {"$ref": "#/components/schemas/HealthOut"}}}
    assert {key: PROBLEM_CONTENT for key in errors} == errors
    assert "HTTPValidationError" not in json.dumps(spec)
    assert {"Problem", "FieldError"} <= spec["components"]["schemas"].keys()


def test_event_stream_documents_each_event_and_its_json_data(api: ApiHarness) -> None:
    """Each SSE event is `progress` (ProgressEvent data), `queue` (QueueEvent data: the place in
    line) or `status` (the finished JobOut)."""
    spec = api.client.get("/openapi.json").json()
    ok = spec["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    variants = ok["content"]["text/event-stream"]["schema"]["oneOf"]
    kinds = {v["properties"]["event"]["const"]: v["properties"]["data"] for v in variants}
    assert set(kinds) == {"progress", "queue", "status"}
    assert kinds["status"]["contentSchema"] == {"$ref": "#/components/schemas/JobOut"}
    progress = kinds["progress"]["contentSchema"]
    assert progress["properties"]["status"] == {"$ref": "#/components/schemas/JobStatus"}
    assert "JobStatus" in spec["components"]["schemas"]
    queue = kinds["queue"]["contentSchema"]
    assert set(queue["properties"]) == {"id", "queue_position", "estimated_start_at"}
    assert "estimate" in queue["properties"]["queue_position"]["description"]
