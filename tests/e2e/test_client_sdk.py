"""The Python SDK (txt2img_client) against the real service process: the sync and the async
client, each through a job's whole life, paging, cancel, events, and the errors a user meets.
The SDK's packaging is tests/integration/test_client_distribution.py; its retry and parsing
rules, tests/unit/client."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import httpx
import pytest

from tests.e2e.conftest import BOOTSTRAP_KEY, RunningService, running_service
from txt2img_client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    JobStatus,
    NotFound,
    ProgressEvent,
    StatusEvent,
    Unauthenticated,
)


class Shape(TypedDict):
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float


FAST = Shape(width=64, height=64, num_inference_steps=2, guidance_scale=1.0)
# A few seconds on a 2-core CPU, with many progress steps.
STEADY = Shape(width=128, height=128, num_inference_steps=30, guidance_scale=7.5)
# About 13 s on a 2-core CPU: still running when it is canceled.
SLOW = Shape(width=256, height=256, num_inference_steps=50, guidance_scale=7.5)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def new_key(service: RunningService, owner: str) -> str:
    """A key of an owner of its own, whose job list holds only this test's jobs."""
    return service.admin("keys", "create", "--owner", owner).splitlines()[-1]


class Recording(httpx.HTTPTransport):
    """httpx's own transport, remembering every request it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)


class TestSyncClient:
    def test_submit_wait_download(self, service: RunningService, tmp_path: Path) -> None:
        with Client(service.base_url, BOOTSTRAP_KEY) as client:
            job = client.submit("a lighthouse at dawn", seed=5, num_images=2, **FAST)
            assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)
            done = client.wait(job.id, timeout=120)
            assert done.status is JobStatus.SUCCEEDED, done.error
            assert (done.progress, [i.seed for i in done.images]) == (1.0, [5, 6])
            assert done.params.num_inference_steps == 2
            assert png_size(client.download(done.images[0])) == (64, 64)
            path = client.download(done.images[1], tmp_path / "second.png")
        assert png_size(path.read_bytes()) == (64, 64)

    def test_a_submit_held_with_wait_answers_the_ended_job(self, service: RunningService) -> None:
        with Client(service.base_url, BOOTSTRAP_KEY) as client:
            job = client.submit("a red bicycle", seed=9, wait=30, **FAST)
            assert job.status is JobStatus.SUCCEEDED
            # The same Idempotency-Key again: the same job, not a second one.
            again = client.submit("a red bicycle", seed=9, idempotency_key="sdk-e2e-1", **FAST)
            replay = client.submit("a red bicycle", seed=9, idempotency_key="sdk-e2e-1", **FAST)
        assert again.id == replay.id

    def test_list_walks_every_page(self, service: RunningService) -> None:
        key = new_key(service, "sdk-lister")
        with Client(service.base_url, key) as client:
            submitted = [client.submit(f"picture {n}", **FAST).id for n in range(3)]
            listed = [job.id for job in client.list(limit=2)]
            first = client.list_page(limit=2)
            second = client.list_page(limit=2, cursor=first.next_cursor)
        assert listed == submitted[::-1]  # newest first, each once
        assert (len(first.items), first.next_cursor is not None) == (2, True)
        assert ([j.id for j in second.items], second.next_cursor) == ([submitted[0]], None)

    def test_cancel_then_cancel_again(self, service: RunningService) -> None:
        with Client(service.base_url, BOOTSTRAP_KEY) as client:
            job = client.submit("a long night", **SLOW)
            canceled = client.cancel(job.id)
            assert canceled.status is JobStatus.CANCELED
            with pytest.raises(Conflict) as raised:
                client.cancel(job.id)
        assert raised.value.code == "job-finished"
        assert raised.value.problem.status == 409 and job.id in str(raised.value.problem.detail)

    def test_events_rise_then_end_with_the_job(self, service: RunningService) -> None:
        with Client(service.base_url, BOOTSTRAP_KEY) as client:
            job = client.submit("a lighthouse at dusk", seed=11, **STEADY)
            events = list(client.events(job.id))
        progress = [e for e in events if isinstance(e, ProgressEvent)]
        final = events[-1]
        assert isinstance(final, StatusEvent) and final.job.status is JobStatus.SUCCEEDED
        assert len(progress) == len(events) - 1 >= 2
        assert [e.progress for e in progress] == sorted(e.progress for e in progress)
        ids = [int(e.event_id) for e in events]
        assert ids == sorted(set(ids))

    def test_an_invalid_body_is_raised_with_its_problem(self, service: RunningService) -> None:
        with (
            Client(service.base_url, BOOTSTRAP_KEY) as client,
            pytest.raises(InvalidRequest) as raised,
        ):
            client.submit("x", width=65, num_inference_steps=500)
        problem = raised.value.problem
        assert (problem.status, problem.code) == (422, "validation-error")
        assert {e.field for e in problem.errors} == {"body.width", "body.num_inference_steps"}

    def test_a_bad_key_is_unauthenticated_and_never_echoed(self, service: RunningService) -> None:
        bad_key = "sdk-not-a-key-5f4e3d2c1b"
        with Client(service.base_url, bad_key) as client, pytest.raises(Unauthenticated) as raised:
            client.get("0" * 32)
        assert raised.value.code == "unauthenticated"
        assert bad_key not in str(raised.value) + repr(raised.value.problem)

    def test_an_unknown_job_is_not_found(self, service: RunningService) -> None:
        with Client(service.base_url, BOOTSTRAP_KEY) as client, pytest.raises(NotFound):
            client.get("0" * 32)


class TestAsyncClient:
    def test_a_jobs_whole_life(self, service: RunningService) -> None:
        """Submit, wait, download; list; events; cancel and its conflict; the errors."""

        async def scenario() -> None:
            async with AsyncClient(service.base_url, BOOTSTRAP_KEY) as client:
                job = await client.submit("an async lighthouse", seed=21, **FAST)
                done = await client.wait(job, timeout=120)
                assert done.status is JobStatus.SUCCEEDED, done.error
                assert png_size(await client.download(done.images[0])) == (64, 64)

                recent = [j.id async for j in client.list(limit=1) if j.id == job.id]
                assert recent == [job.id]

                steady = await client.submit("an async dusk", seed=12, **STEADY)
                events = [e async for e in client.events(steady.id)]
                assert isinstance(events[-1], StatusEvent)
                assert events[-1].job.status is JobStatus.SUCCEEDED

                slow = await client.submit("an async night", **SLOW)
                assert (await client.cancel(slow.id)).status is JobStatus.CANCELED
                with pytest.raises(Conflict):
                    await client.cancel(slow.id)
                with pytest.raises(InvalidRequest) as invalid:
                    await client.submit("x", height=2000)
                assert [e.field for e in invalid.value.problem.errors] == ["body.height"]
            async with AsyncClient(service.base_url, "sdk-bad-key") as stranger:
                with pytest.raises(Unauthenticated):
                    await stranger.get(job.id)

        asyncio.run(scenario())


@pytest.fixture(scope="module")
def short_streams(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """A second service whose event streams end after 0.3 s (EVENTS_STREAM_MAX_S; 300 s by
    default, under Cloud Run's request timeout): any job outlives its first stream."""
    data_dir = tmp_path_factory.mktemp("short-streams")
    with running_service(tiny_model_dir, data_dir, EVENTS_STREAM_MAX_S="0.3") as running:
        yield running


class TestEventsAcrossReconnects:
    def test_the_stream_is_resumed_from_the_last_event_id(
        self, short_streams: RunningService
    ) -> None:
        """The job outlives several streams; the client opens each next one with the id of
        the last event it saw, sees every event once and stops at the terminal one."""
        transport = Recording()
        with Client(short_streams.base_url, BOOTSTRAP_KEY, transport=transport) as client:
            job = client.submit("a lighthouse in a long storm", seed=3, **STEADY)
            events = list(client.events(job.id))
        streams = [r for r in transport.sent if r.url.path.endswith("/events")]
        assert len(streams) >= 2
        final = events[-1]
        assert isinstance(final, StatusEvent) and final.job.status is JobStatus.SUCCEEDED
        ids = [int(e.event_id) for e in events]
        assert ids == sorted(set(ids))
        resumed_from = [r.headers.get("Last-Event-ID") for r in streams]
        assert resumed_from[0] is None
        assert all(value is not None and int(value) in ids for value in resumed_from[1:])
