"""Server-Sent Events for one job: status and step progress until it ends, and its place in
line for the GPUs while it waits.

The stream re-reads the job store (never process memory), so it is right on every profile and
behind any number of API instances. Where jobs run in this process, `JobWaits` wakes it the
moment a job ends; progress and the place in line (dal.dispatcher) are picked up by polling.

Event ids grow with the job's state (`rank * 100000 + int(progress * 10000)`, rank queued 0,
running 1, finished 2), so a client that reconnects with `Last-Event-ID: N` gets only newer
events, and always the terminal one once the job has finished.

A `queue` event is no new state: it carries the id the stream is at (the queued state's, or the
larger one the client reconnected with), so ids never go down and a reconnect resumes from the
same point. It is sent when a stream meets its job queued, and again whenever the place
changes; so a reconnect gets the current place once more (the one the client had may be stale).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Reader
from api.problem_openapi import problem_responses
from api.routes.jobs import JobId
from api.wiring import Services
from dal.errors import NotFound
from dal.records import Job, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

EVENT_STREAM = "text/event-stream"
HEARTBEAT_S = 15.0
RETRY_MS = 2000
MAX_POLL_S = 0.25
_RANK = {JobStatus.QUEUED: 0, JobStatus.RUNNING: 1}


class ProgressEvent(BaseModel):
    id: str
    status: JobStatus
    progress: float
    updated_at: datetime


class QueueEvent(BaseModel):
    id: str
    queue_position: int = Field(
        ge=0,
        description=(
            "How many jobs will be handed to the GPUs before this one, in the current fair "
            "order between users (0: it is next, or handed over already). An estimate: other "
            "users' new jobs may go ahead of it."
        ),
    )
    estimated_start_at: datetime | None = Field(
        description=(
            "When it should be handed to the GPUs, projected from the rate at which jobs have "
            "ended lately. An estimate; null when nothing has been measured yet, or once it is "
            "handed over."
        ),
    )


def event_id(job: Job) -> int:
    rank = 2 if job.status.is_terminal else _RANK.get(job.status, 0)
    progress = min(max(job.progress, 0.0), 1.0)
    return rank * 100_000 + int(progress * 10_000)


def _frame(event: str, eid: int, data: str) -> str:
    return f"id: {eid}\nevent: {event}\ndata: {data}\n\n"


def _last_event_id(value: str | None) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        return -1


def _event_schema(event: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "event": {"const": event},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data_schema,
            },
        },
        "required": ["event", "id", "data"],
    }


def _data_schema(model: type[BaseModel]) -> dict[str, Any]:
    # JobStatus, its one definition, is in the document's components already (JobOut uses it).
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


# One event of the stream (OpenAPI 3.1 has no item schema for streams; its `schema` for
# text/event-stream describes each event), with its `data` as the JSON document it carries.
_EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _event_schema("progress", _data_schema(ProgressEvent)),
        _event_schema("queue", _data_schema(QueueEvent)),
        _event_schema("status", {"$ref": "#/components/schemas/JobOut"}),
    ]
}


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `progress` while the job is queued or running "
            "(data: id, status, progress, updated_at); while it is queued, `queue` with its "
            "place in line for the GPUs (data: id, queue_position, estimated_start_at: "
            "estimates, as in the job), at once and whenever the position changes; then one "
            "`status` event with the finished job, and the stream ends. Reconnect with "
            "`Last-Event-ID`.",
            "content": {EVENT_STREAM: {"schema": _EVENT_SCHEMA}},
        },
        **problem_responses(401, 404, 429, 503),
    },
    summary="Follow a job's progress as Server-Sent Events",
)
async def job_events(
    job_id: JobId,
    request: Request,
    response: Response,
    caller: Reader,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Resume: only events with a larger id are sent (the terminal one "
            "always is, and so is a queued job's current `queue` event).",
        ),
    ] = None,
) -> StreamingResponse:
    # Unknown job or another owner's: a 404 problem, before any byte of the stream.
    services = caller.services
    read_at = time.monotonic()
    job = await run_in_threadpool(services.job_service.get, owner=caller.owner, job_id=job_id)
    headers = dict(response.headers)  # the rate-limit headers set by the dependency
    headers.pop("content-length", None)
    headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    stream = _events(request, services, caller.owner, job, read_at, _last_event_id(last_event_id))
    return StreamingResponse(stream, media_type=EVENT_STREAM, headers=headers)


async def _events(
    request: Request, services: Services, owner: str, job: Job, read_at: float, last_id: int
) -> AsyncIterator[str]:
    """`read_at`: when the read that gave `job` began (`time.monotonic()`): an end heard since
    then wakes the stream's wait at once (api/job_waits.py)."""
    settings = services.settings
    poll = min(settings.prefer_wait_poll_s, MAX_POLL_S)
    deadline = time.monotonic() + settings.events_stream_max_s
    yield f"retry: {RETRY_MS}\n\n"
    last_write = time.monotonic()
    position: int | None = None  # the place in line this stream sent last
    while True:
        eid = event_id(job)
        if job.status.is_terminal:
            view = await services.view_soon(job, str(request.base_url))
            yield _frame("status", eid, view.model_dump_json())
            return
        if eid > last_id:
            last_id = eid
            data = ProgressEvent(
                id=job.id, status=job.status, progress=job.progress, updated_at=job.updated_at
            )
            yield _frame("progress", eid, data.model_dump_json())
            last_write = time.monotonic()
        if job.status is JobStatus.QUEUED:
            place = await run_in_threadpool(services.dispatcher.place, job)
            if place is not None and place.position != position:
                position = place.position
                queue = QueueEvent(
                    id=job.id,
                    queue_position=place.position,
                    estimated_start_at=place.estimated_start_at,
                )
                # No new state: the id the stream is at (last_id >= eid here).
                yield _frame("queue", last_id, queue.model_dump_json())
                last_write = time.monotonic()
        else:
            position = None  # back in line after a failed attempt: its place is news again
        now = time.monotonic()
        if now >= deadline or await request.is_disconnected():
            return  # the client reconnects with Last-Event-ID
        if now - last_write >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_write = now
        wake = await services.job_waits.wait(
            job.id, min(poll, max(deadline - now, 0.0)), since=read_at
        )
        if wake is not None and wake.ended is not None and wake.ended.owner == owner:
            job = wake.ended  # ended in this process: its finisher's record, no read needed
            continue
        try:
            read_at = time.monotonic()
            job = await run_in_threadpool(services.job_service.get, owner=owner, job_id=job.id)
        except NotFound:
            return  # deleted meanwhile: a reconnect gets the 404
