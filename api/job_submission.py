"""Submitting a job for a caller and waiting for it to end: the native route, the OpenAI Images
dialect and the AUTOMATIC1111 dialect all come through here, so every accepted request is an
ordinary job of the caller's key, under the same quotas, idempotency, metrics and log lines.

The synchronous dialects hold the request until the job ends, up to SYNC_WAIT_MAX_S; a caller
that hangs up meanwhile gets its job canceled (SYNC_CANCEL_ON_DISCONNECT), so an abandoned
call does not keep a GPU busy for nobody.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.api_keys import Principal
from api.job_service import JobRequest, Submitted
from api.problems import ProblemError
from api.quotas import QuotaLimits
from api.wiring import Services
from dal.errors import JobAlreadyFinished
from dal.records import Job
from dal.telemetry import set_job_ids
from dal.telemetry.metrics import JOBS_SUBMITTED

log = logging.getLogger(__name__)

# What a synchronous call whose client hung up answers: nginx's "client closed request". Only
# the access log and the metrics ever see it; the client is gone.
CLIENT_CLOSED_REQUEST = 499

# The header every submitting route takes; check_idempotency_key validates it in the route, so
# a bad body is still reported before a bad key.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe submission: the same key and body return the same job.",
    ),
]


class CallerGone(Exception):
    """The client closed the connection while its request waited for the job."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"the caller of job {job.id} hung up")
        self.job = job


class StillRunning(Exception):
    """The job did not end within the synchronous wait; the caller can fetch it natively."""

    def __init__(self, job: Job, waited_s: float) -> None:
        super().__init__(f"job {job.id} is still {job.status.value} after {waited_s:g} s")
        self.job = job
        self.waited_s = waited_s


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable() or not value.isascii():
        raise ProblemError.invalid_field(
            "header.Idempotency-Key", "must be 1-255 printable ASCII characters"
        )
    return value


async def submit(
    services: Services,
    principal: Principal,
    request: JobRequest,
    *,
    idempotency_key: str | None,
) -> Submitted:
    """Record and queue a job of `principal` (or find the one an idempotent retry or an
    identical seeded request already made)."""
    submitted = await services.submit_lane.run(
        services.job_service.submit,
        owner=principal.owner,
        request=request,
        idempotency_key=idempotency_key,
        quota=QuotaLimits.resolve(
            services.default_quota,
            max_in_flight=principal.max_in_flight,
            images_per_day=principal.images_per_day,
        ),
        weight=principal.weight,
    )
    job = submitted.job
    # The rest of this request's log lines (and its access line) name the job.
    set_job_ids([job.id])
    outcome = (
        "created" if submitted.created else "deduplicated" if submitted.deduplicated else "replayed"
    )
    JOBS_SUBMITTED.labels(outcome).inc()
    log.info("job %s submitted: %s", job.id, outcome)
    return submitted


async def wait_until_finished(
    services: Services,
    owner: str,
    job: Job,
    wait_s: float,
    *,
    read_at: float,
    caller: Request | None = None,
) -> Job:
    """Re-read the job when this process hears it ended, or every PREFER_WAIT_POLL_S, until it
    has ended or `wait_s` has passed. `read_at`: when the read that gave `job` began
    (`time.monotonic()`), so that an end heard since then is not missed (api/job_waits.py).
    With `caller`, raises CallerGone once its client has hung up (checked at every re-read)."""
    deadline = time.monotonic() + wait_s
    poll = services.settings.prefer_wait_poll_s
    while not job.status.is_terminal:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        wake = await services.job_waits.wait(job.id, min(remaining, poll), since=read_at)
        if wake is not None and wake.ended is not None and wake.ended.owner == owner:
            job = wake.ended  # the record this process's finisher ended it with: no read needed
        else:
            read_at = time.monotonic()
            job = await run_in_threadpool(services.job_service.get, owner=owner, job_id=job.id)
        if caller is not None and not job.status.is_terminal and await caller.is_disconnected():
            raise CallerGone(job)
    return job


async def run_to_completion(
    services: Services,
    principal: Principal,
    request: JobRequest,
    *,
    caller: Request,
    idempotency_key: str | None = None,
    on_submitted: Callable[[Job], Awaitable[None]] | None = None,
) -> Job:
    """Submit and hold the caller until the job has ended. Raises StillRunning past
    SYNC_WAIT_MAX_S, and CallerGone when the client hung up (its job canceled first, unless
    SYNC_CANCEL_ON_DISCONNECT is off). `on_submitted` hears of the job before the wait (the
    AUTOMATIC1111 dialect remembers it for its progress and interrupt routes)."""
    settings = services.settings
    read_at = time.monotonic()
    submitted = await submit(services, principal, request, idempotency_key=idempotency_key)
    if on_submitted is not None:
        await on_submitted(submitted.job)
    try:
        job = await wait_until_finished(
            services,
            principal.owner,
            submitted.job,
            settings.sync_wait_max_s,
            read_at=read_at,
            caller=caller,
        )
    except CallerGone as gone:
        if settings.sync_cancel_on_disconnect:
            await _cancel_abandoned(services, principal, gone.job)
        raise
    if not job.status.is_terminal:
        raise StillRunning(job, settings.sync_wait_max_s)
    return job


async def _cancel_abandoned(services: Services, principal: Principal, job: Job) -> None:
    try:
        await run_in_threadpool(services.job_service.cancel, owner=principal.owner, job_id=job.id)
    except JobAlreadyFinished:
        return  # it ended as the caller left: nothing to stop
    log.info("job %s canceled: its synchronous caller hung up", job.id)
