"""A scripted stand-in for the service behind `httpx.MockTransport`: it answers each request
with the next scripted answer and records what it was sent, for tests to assert on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx

from txt2img_client import RetryPolicy

BASE_URL = "https://txt2img.test"
KEY = "unit-test-key"
JOB_ID = "0f8c2d4e5b6a47f1a2b3c4d5e6f70819"
# Retries without the waits.
FAST = RetryPolicy(backoff_base_s=0.001, backoff_max_s=0.001)


def job_json(
    job_id: str = JOB_ID, status: str = "queued", progress: float = 0.0, **extra: Any
) -> dict[str, Any]:
    """A job document as `GET /v1/jobs/{id}` writes it."""
    ended = status in ("succeeded", "failed", "canceled")
    return {
        "id": job_id,
        "status": status,
        "progress": progress,
        "model": "tiny-sd",
        "created_at": "2026-11-27T12:00:00Z",
        "updated_at": "2026-11-27T12:00:03.250000Z",
        "started_at": None if status == "queued" else "2026-11-27T12:00:01Z",
        "finished_at": "2026-11-27T12:00:03Z" if ended else None,
        "attempts": 1,
        "error": None,
        "params": {
            "prompt": "a lighthouse",
            "negative_prompt": None,
            "width": 64,
            "height": 64,
            "num_inference_steps": 2,
            "guidance_scale": 7.5,
            "seed": 7,
            "num_images": 1,
        },
        "images": (
            [
                {
                    "url": f"{BASE_URL}/v1/blobs/images/ab/{job_id}/0.png?expires=1&sig=abc",
                    "expires_at": "2026-11-27T12:15:03Z",
                    "width": 64,
                    "height": 64,
                    "seed": 7,
                }
            ]
            if status == "succeeded"
            else []
        ),
        **extra,
    }


def problem(status: int, code: str, detail: str, **members: Any) -> dict[str, Any]:
    return {
        "type": f"/problems/{code}",
        "title": code.replace("-", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **members,
    }


def problem_response(
    status: int, code: str, detail: str = "", headers: dict[str, str] | None = None, **members: Any
) -> httpx.Response:
    return httpx.Response(
        status,
        json=problem(status, code, detail or code, **members),
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )


def progress_frame(event_id: int, progress: float, status: str = "running") -> str:
    data = {
        "id": JOB_ID,
        "status": status,
        "progress": progress,
        "updated_at": "2026-11-27T12:00:02Z",
    }
    return f"id: {event_id}\nevent: progress\ndata: {json.dumps(data)}\n\n"


def queue_frame(event_id: int, position: int, estimated_start_at: str | None = None) -> str:
    data = {"id": JOB_ID, "queue_position": position, "estimated_start_at": estimated_start_at}
    return f"id: {event_id}\nevent: queue\ndata: {json.dumps(data)}\n\n"


def status_frame(event_id: int = 200000) -> str:
    data = json.dumps(job_json(status="succeeded", progress=1.0))
    return f"id: {event_id}\nevent: status\ndata: {data}\n\n"


def sse(*frames: str, drop: bool = False) -> httpx.Response:
    """A `text/event-stream` answer of these frames, one chunk each; `drop`: the connection
    breaks after the last one instead of ending."""
    return httpx.Response(
        200,
        headers={"Content-Type": "text/event-stream"},
        stream=Chunks([frame.encode() for frame in frames], drop=drop),
    )


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that arrives in these chunks, then ends or (`drop`) breaks off."""

    def __init__(self, chunks: Sequence[bytes], *, drop: bool = False) -> None:
        self.chunks = chunks
        self.drop = drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.ReadError("connection reset by peer")


class ScriptedApi:
    """Answers requests with `answers` in order (an exception is raised instead of
    answering); `requests` holds every request it was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request: {request.method} {request.url}")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def header(self, name: str) -> list[str | None]:
        """The header `name` of every request sent, in order."""
        return [request.headers.get(name) for request in self.requests]
