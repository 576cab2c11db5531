"""The synchronous client against a scripted service (httpx.MockTransport)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.client.fake_api import (
    BASE_URL,
    FAST,
    JOB_ID,
    KEY,
    ScriptedApi,
    job_json,
    problem_response,
    progress_frame,
    queue_frame,
    sse,
    status_frame,
)
from txt2img_client import (
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    Job,
    JobStatus,
    NotFound,
    ProgressEvent,
    QueueEvent,
    RateLimited,
    RetryPolicy,
    ServiceUnavailable,
    ServiceUnreachable,
    StatusEvent,
    UnexpectedResponse,
    WaitTimeout,
)

HEX_KEY = re.compile(r"[0-9a-f]{32}")


def client(api: ScriptedApi, retry: RetryPolicy = FAST) -> Client:
    return Client(BASE_URL, KEY, retry=retry, transport=api.transport())


class TestSubmit:
    def test_sends_the_given_fields_with_the_key_and_an_idempotency_key(self) -> None:
        api = ScriptedApi(httpx.Response(202, json=job_json()))
        with client(api) as c:
            job = c.submit("a lighthouse", seed=7, num_images=2)
        (request,) = api.requests
        assert (request.method, request.url.path) == ("POST", "/v1/jobs")
        assert json.loads(request.content) == {"prompt": "a lighthouse", "seed": 7, "num_images": 2}
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert HEX_KEY.fullmatch(request.headers["Idempotency-Key"])
        assert "Prefer" not in request.headers
        assert (job.id, job.status, job.params.seed) == (JOB_ID, JobStatus.QUEUED, 7)
        assert job.raw["id"] == JOB_ID

    def test_a_429_is_retried_after_retry_after_with_the_same_idempotency_key(self) -> None:
        api = ScriptedApi(
            problem_response(429, "rate-limited", headers={"Retry-After": "0"}),
            problem_response(503, "service-unavailable"),
            httpx.Response(202, json=job_json()),
            httpx.Response(202, json=job_json("another")),
        )
        with client(api) as c:
            first = c.submit("x")
            second = c.submit("y")
        keys = api.header("Idempotency-Key")
        assert (first.id, second.id) == (JOB_ID, "another")
        assert keys[0] == keys[1] == keys[2] != keys[3]

    def test_a_caller_key_and_a_wait_are_sent(self) -> None:
        api = ScriptedApi(httpx.Response(200, json=job_json(status="succeeded", progress=1.0)))
        with client(api) as c:
            job = c.submit("x", idempotency_key="mine-1", wait=5)
        assert api.header("Idempotency-Key") == ["mine-1"]
        assert api.header("Prefer") == ["wait=5"]
        assert job.is_terminal and len(job.images) == 1

    def test_503_is_retried_until_the_attempts_run_out(self) -> None:
        api = ScriptedApi(*(problem_response(503, "service-unavailable", "queue down"),) * 4)
        with client(api) as c, pytest.raises(ServiceUnavailable) as raised:
            c.submit("x")
        assert len(api.requests) == 4
        assert raised.value.problem.detail == "queue down"

    def test_a_quota_whose_retry_after_passes_the_budget_is_raised_at_once(self) -> None:
        api = ScriptedApi(
            problem_response(
                429,
                "quota-images-per-day-exceeded",
                headers={"Retry-After": "40000"},
                limit=10,
                usage=10,
            )
        )
        with client(api) as c, pytest.raises(RateLimited) as raised:
            c.submit("x")
        assert len(api.requests) == 1
        assert raised.value.retry_after == 40000.0
        assert raised.value.problem.extensions["limit"] == 10

    def test_an_invalid_request_is_raised_at_once_with_its_field_errors(self) -> None:
        api = ScriptedApi(
            problem_response(
                422,
                "validation-error",
                errors=[{"field": "body.width", "message": "must be a multiple of 8"}],
            )
        )
        with client(api) as c, pytest.raises(InvalidRequest) as raised:
            c.submit("x", width=65)
        assert len(api.requests) == 1
        assert [e.field for e in raised.value.problem.errors] == ["body.width"]

    def test_no_answer_is_retried_then_reported_without_the_key(self) -> None:
        refused = httpx.ConnectError("connection refused")
        api = ScriptedApi(refused, httpx.Response(202, json=job_json()), *(refused,) * 4)
        with client(api) as c:
            assert c.submit("x").id == JOB_ID
            with pytest.raises(ServiceUnreachable) as raised:
                c.get(JOB_ID)
        assert str(raised.value) == f"cannot reach {BASE_URL}: ConnectError: connection refused"
        assert KEY not in str(raised.value)
        assert len(api.requests) == 2 + 4


class TestReads:
    def test_get_reads_a_typed_job(self) -> None:
        api = ScriptedApi(httpx.Response(200, json=job_json(status="running", progress=0.5)))
        with client(api) as c:
            job = c.get(JOB_ID)
        assert api.requests[0].url.path == f"/v1/jobs/{JOB_ID}"
        assert (job.status, job.progress, job.finished_at) == (JobStatus.RUNNING, 0.5, None)
        assert job.updated_at.isoformat() == "2026-11-27T12:00:03.250000+00:00"

    def test_a_queued_job_reads_its_place_in_line(self) -> None:
        waiting = job_json(queue_position=2, estimated_start_at="2026-11-27T12:00:15Z")
        api = ScriptedApi(httpx.Response(200, json=waiting))
        with client(api) as c:
            job = c.get(JOB_ID)
        assert job.queue_position == 2
        assert job.estimated_start_at is not None
        assert job.estimated_start_at.isoformat() == "2026-11-27T12:00:15+00:00"

    @pytest.mark.parametrize(
        "place",
        [{}, {"queue_position": None, "estimated_start_at": None}],
        ids=["an older service", "running"],
    )
    def test_a_job_without_a_place_in_line_reads_none(self, place: dict[str, Any]) -> None:
        api = ScriptedApi(httpx.Response(200, json=job_json(status="running", **place)))
        with client(api) as c:
            job = c.get(JOB_ID)
        assert (job.queue_position, job.estimated_start_at) == (None, None)

    def test_a_job_id_cannot_escape_its_path(self) -> None:
        api = ScriptedApi(problem_response(404, "not-found"))
        with client(api) as c, pytest.raises(NotFound):
            c.get("../webhooks/secret")
        assert api.requests[0].url.raw_path == b"/v1/jobs/..%2Fwebhooks%2Fsecret"
        with Client(BASE_URL, KEY) as c, pytest.raises(ValueError):
            c.get("..")

    def test_list_follows_the_cursors_across_pages(self) -> None:
        api = ScriptedApi(
            httpx.Response(
                200, json={"items": [job_json("a"), job_json("b")], "next_cursor": "c1"}
            ),
            httpx.Response(200, json={"items": [job_json("c")], "next_cursor": None}),
        )
        with client(api) as c:
            ids = [job.id for job in c.list(limit=2)]
        assert ids == ["a", "b", "c"]
        assert [dict(r.url.params) for r in api.requests] == [
            {"limit": "2"},
            {"limit": "2", "cursor": "c1"},
        ]

    def test_list_page_reads_one_page(self) -> None:
        api = ScriptedApi(httpx.Response(200, json={"items": [job_json("a")], "next_cursor": "n"}))
        with client(api) as c:
            page = c.list_page(cursor="start")
        assert ([j.id for j in page.items], page.next_cursor) == (["a"], "n")
        assert page.raw["next_cursor"] == "n"

    def test_a_malformed_answer_is_unexpected(self) -> None:
        api = ScriptedApi(httpx.Response(200, json={"id": "x"}), httpx.Response(200, text="<html>"))
        with client(api) as c:
            with pytest.raises(UnexpectedResponse):
                c.get("x")
            with pytest.raises(UnexpectedResponse):
                c.get("x")


class TestCancel:
    def test_cancel(self) -> None:
        api = ScriptedApi(httpx.Response(200, json=job_json(status="canceled")))
        with client(api) as c:
            job = c.cancel(JOB_ID)
        assert api.requests[0].method == "DELETE"
        assert job.status is JobStatus.CANCELED

    def test_a_finished_job_is_a_conflict(self) -> None:
        api = ScriptedApi(problem_response(409, "job-finished", "job x is already succeeded"))
        with client(api) as c, pytest.raises(Conflict) as raised:
            c.cancel(JOB_ID)
        assert raised.value.code == "job-finished"

    def test_a_retried_cancel_that_finds_its_own_cancel_done_returns_the_job(self) -> None:
        """The first attempt canceled the job but its answer was lost: the retry's 409 is
        no error to the caller."""
        api = ScriptedApi(
            httpx.ReadError("reset"),
            problem_response(409, "job-finished", "already canceled"),
            httpx.Response(200, json=job_json(status="canceled")),
        )
        with client(api) as c:
            job = c.cancel(JOB_ID)
        assert job.status is JobStatus.CANCELED
        assert [r.method for r in api.requests] == ["DELETE", "DELETE", "GET"]


class TestWait:
    def test_holds_each_read_until_the_job_ends(self) -> None:
        applied = {"Preference-Applied": "wait=20"}
        api = ScriptedApi(
            httpx.Response(200, json=job_json(status="running", progress=0.5), headers=applied),
            httpx.Response(200, json=job_json(status="succeeded", progress=1.0), headers=applied),
        )
        seen: list[tuple[str, float]] = []
        with client(api) as c:
            job = c.wait(
                Job.from_dict(job_json()), on_update=lambda j: seen.append((j.status, j.progress))
            )
        assert job.status is JobStatus.SUCCEEDED
        assert api.header("Prefer") == ["wait=20", "wait=20"]
        assert seen == [("queued", 0.0), ("running", 0.5), ("succeeded", 1.0)]

    def test_a_hold_never_passes_the_timeout(self) -> None:
        api = ScriptedApi(
            httpx.Response(200, json=job_json(status="succeeded", progress=1.0)),
        )
        with client(api) as c:
            c.wait(Job.from_dict(job_json()), timeout=2.5, hold=10)
        (prefer,) = api.header("Prefer")
        assert prefer is not None and 0 < float(prefer.removeprefix("wait=")) <= 2.5

    def test_gives_up_after_the_timeout_with_the_last_state(self) -> None:
        api = ScriptedApi(httpx.Response(200, json=job_json(status="running", progress=0.3)))
        with client(api) as c, pytest.raises(WaitTimeout) as raised:
            c.wait(JOB_ID, timeout=0)
        assert raised.value.job.progress == 0.3


class TestEvents:
    def test_progress_then_the_status_event_ends_the_iteration(self) -> None:
        api = ScriptedApi(
            sse(
                "retry: 2000\n\n",
                progress_frame(100000, 0.0),
                ": keep-alive\n\n",
                progress_frame(100500, 0.05),
                status_frame(),
            )
        )
        with client(api) as c:
            events = list(c.events(JOB_ID))
        assert [type(e) for e in events] == [ProgressEvent, ProgressEvent, StatusEvent]
        assert [e.event_id for e in events] == ["100000", "100500", "200000"]
        final = events[-1]
        assert isinstance(final, StatusEvent) and final.job.status is JobStatus.SUCCEEDED
        assert api.requests[0].headers["Accept"] == "text/event-stream"
        assert len(api.requests) == 1

    def test_a_stream_the_service_ends_is_opened_again_from_the_last_event(self) -> None:
        api = ScriptedApi(
            sse("retry: 0\n\n", progress_frame(100000, 0.0), progress_frame(100200, 0.02)),
            sse("retry: 0\n\n", progress_frame(100700, 0.07)),
            sse("retry: 0\n\n", status_frame()),
        )
        with client(api) as c:
            ids = [e.event_id for e in c.events(JOB_ID)]
        assert ids == ["100000", "100200", "100700", "200000"]
        assert api.header("Last-Event-ID") == [None, "100200", "100700"]

    def test_a_dropped_stream_is_opened_again_and_a_half_event_forgotten(self) -> None:
        api = ScriptedApi(
            sse(
                "retry: 0\n\n",
                progress_frame(100000, 0.0),
                "id: 100900\nevent: progress\ndata: {",
                drop=True,
            ),
            sse(status_frame()),
        )
        with client(api, retry=FAST) as c:
            ids = [e.event_id for e in c.events(JOB_ID, last_event_id="5")]
        assert ids == ["100000", "200000"]
        assert api.header("Last-Event-ID") == ["5", "100000"]

    def test_a_stream_that_keeps_dropping_is_given_up(self) -> None:
        api = ScriptedApi(*(sse("retry: 0\n\n", drop=True) for _ in range(4)))
        with client(api) as c, pytest.raises(ServiceUnreachable):
            list(c.events(JOB_ID))
        assert len(api.requests) == 4

    def test_queue_events_come_only_when_asked_for(self) -> None:
        frames = (
            progress_frame(0, 0.0, status="queued"),
            queue_frame(0, 1, "2026-11-27T12:00:15Z"),
            queue_frame(0, 0),
            status_frame(),
        )
        with client(ScriptedApi(sse(*frames))) as c:
            assert [type(e) for e in c.events(JOB_ID)] == [ProgressEvent, StatusEvent]
        with client(ScriptedApi(sse(*frames))) as c:
            events = list(c.events(JOB_ID, queue=True))
        assert [type(e) for e in events] == [ProgressEvent, QueueEvent, QueueEvent, StatusEvent]
        places = [e for e in events if isinstance(e, QueueEvent)]
        assert [(e.event_id, e.job_id, e.queue_position) for e in places] == [
            ("0", JOB_ID, 1),
            ("0", JOB_ID, 0),
        ]
        assert places[0].estimated_start_at is not None
        assert places[0].estimated_start_at.isoformat() == "2026-11-27T12:00:15+00:00"
        assert places[1].estimated_start_at is None

    def test_unknown_event_types_are_skipped(self) -> None:
        api = ScriptedApi(sse("event: gossip\ndata: {}\n\n", "data: plain\n\n", status_frame()))
        with client(api) as c:
            assert [type(e) for e in c.events(JOB_ID)] == [StatusEvent]

    def test_an_unknown_job_is_not_found(self) -> None:
        api = ScriptedApi(problem_response(404, "not-found"))
        with client(api) as c, pytest.raises(NotFound):
            next(c.events(JOB_ID))

    def test_an_answer_that_is_no_stream_is_unexpected(self) -> None:
        api = ScriptedApi(httpx.Response(200, json=job_json()))
        with client(api) as c, pytest.raises(UnexpectedResponse):
            next(c.events(JOB_ID))


class TestDownload:
    def test_bytes_or_a_file_and_never_the_api_key(self, tmp_path: Path) -> None:
        png = b"\x89PNG\r\n\x1a\nfake"
        api = ScriptedApi(httpx.Response(200, content=png), httpx.Response(200, content=png))
        image = Job.from_dict(job_json(status="succeeded")).images[0]
        with client(api) as c:
            assert c.download(image) == png
            path = c.download(image.url, tmp_path / "out.png")
        assert path.read_bytes() == png
        assert api.header("Authorization") == [None, None]
        assert str(api.requests[0].url) == image.url

    def test_an_expired_url_is_forbidden(self) -> None:
        api = ScriptedApi(problem_response(403, "forbidden", "signed URL expired"))
        with client(api) as c, pytest.raises(Forbidden):
            c.download(f"{BASE_URL}/v1/blobs/x.png?expires=1&sig=0")
