"""The asynchronous client against a scripted service (httpx.MockTransport): the same
behaviour as the synchronous one, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

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
    AsyncClient,
    InvalidRequest,
    Job,
    JobStatus,
    QueueEvent,
    ServiceUnreachable,
    StatusEvent,
    Unauthenticated,
    WaitTimeout,
)

T = TypeVar("T")


def run(api: ScriptedApi, scenario: Callable[[AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncClient(BASE_URL, KEY, retry=FAST, transport=api.transport()) as client:
            return await scenario(client)

    return asyncio.run(main())


class TestAsyncClient:
    def test_submit_is_retried_with_one_idempotency_key(self) -> None:
        api = ScriptedApi(
            problem_response(429, "rate-limited", headers={"Retry-After": "0"}),
            httpx.ConnectError("refused"),
            httpx.Response(202, json=job_json()),
        )
        job = run(api, lambda c: c.submit("a lighthouse", seed=7))
        assert job.id == JOB_ID
        keys = api.header("Idempotency-Key")
        assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]
        assert api.header("Authorization") == [f"Bearer {KEY}"] * 3

    def test_errors_carry_the_problem(self) -> None:
        api = ScriptedApi(
            problem_response(422, "validation-error", "body.width: must be a multiple of 8"),
            problem_response(401, "unauthenticated"),
        )

        async def scenario(client: AsyncClient) -> None:
            with pytest.raises(InvalidRequest) as invalid:
                await client.submit("x", width=65)
            assert invalid.value.problem.detail == "body.width: must be a multiple of 8"
            with pytest.raises(Unauthenticated):
                await client.get(JOB_ID)

        run(api, scenario)

    def test_list_follows_the_cursors(self) -> None:
        api = ScriptedApi(
            httpx.Response(200, json={"items": [job_json("a")], "next_cursor": "c1"}),
            httpx.Response(200, json={"items": [job_json("b")], "next_cursor": None}),
        )

        async def scenario(client: AsyncClient) -> list[str]:
            return [job.id async for job in client.list(limit=1)]

        assert run(api, scenario) == ["a", "b"]
        assert api.requests[1].url.params["cursor"] == "c1"

    def test_wait_holds_reads_until_the_end_and_times_out(self) -> None:
        api = ScriptedApi(
            httpx.Response(
                200,
                json=job_json(status="succeeded", progress=1.0),
                headers={"Preference-Applied": "wait=20"},
            ),
            httpx.Response(200, json=job_json(status="running", progress=0.3)),
        )

        async def scenario(client: AsyncClient) -> Job:
            done = await client.wait(Job.from_dict(job_json()))
            with pytest.raises(WaitTimeout):
                await client.wait(JOB_ID, timeout=0)
            return done

        assert run(api, scenario).status is JobStatus.SUCCEEDED
        assert api.header("Prefer") == ["wait=20", None]

    def test_events_reconnect_after_a_drop_from_the_last_event(self) -> None:
        api = ScriptedApi(
            sse("retry: 0\n\n", progress_frame(100000, 0.0), "data: half", drop=True),
            sse(progress_frame(100300, 0.03), status_frame()),
        )

        async def scenario(client: AsyncClient) -> list[str]:
            return [event.event_id async for event in client.events(JOB_ID)]

        assert run(api, scenario) == ["100000", "100300", "200000"]
        assert api.header("Last-Event-ID") == [None, "100000"]

    def test_events_give_up_on_a_stream_that_keeps_dropping(self) -> None:
        api = ScriptedApi(*(sse("retry: 0\n\n", drop=True) for _ in range(4)))

        async def scenario(client: AsyncClient) -> list[object]:
            return [event async for event in client.events(JOB_ID)]

        with pytest.raises(ServiceUnreachable):
            run(api, scenario)

    def test_events_end_with_the_status_event(self) -> None:
        api = ScriptedApi(sse(status_frame()))

        async def scenario(client: AsyncClient) -> list[object]:
            return [event async for event in client.events(JOB_ID)]

        (event,) = run(api, scenario)
        assert isinstance(event, StatusEvent) and event.job.is_terminal

    def test_events_tell_the_place_in_line_when_asked(self) -> None:
        frames = (progress_frame(0, 0.0, status="queued"), queue_frame(0, 2), status_frame())

        async def scenario(client: AsyncClient) -> tuple[list[str], list[str]]:
            plain = [type(event).__name__ async for event in client.events(JOB_ID)]
            places = [
                f"{event.event_id}:{event.queue_position}"
                async for event in client.events(JOB_ID, queue=True)
                if isinstance(event, QueueEvent)
            ]
            return plain, places

        api = ScriptedApi(sse(*frames), sse(*frames))
        assert run(api, scenario) == (["ProgressEvent", "StatusEvent"], ["0:2"])

    def test_download_to_a_file_without_the_key(self, tmp_path: Path) -> None:
        api = ScriptedApi(
            httpx.Response(200, content=b"png"),
            httpx.Response(200, json=job_json(status="canceled")),
        )
        url = job_json(status="succeeded")["images"][0]["url"]

        async def scenario(client: AsyncClient) -> Path:
            path = await client.download(str(url), tmp_path / "a.png")
            assert (await client.cancel(JOB_ID)).status is JobStatus.CANCELED
            return path

        assert run(api, scenario).read_bytes() == b"png"
        assert api.header("Authorization") == [None, f"Bearer {KEY}"]
        assert [r.method for r in api.requests] == ["GET", "DELETE"]
