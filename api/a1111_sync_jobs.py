"""The caller's AUTOMATIC1111 calls in flight: what `/sdapi/v1/progress` reports and
`/sdapi/v1/interrupt` stops.

A1111 serves one generation at a time for everybody, and those two routes act on it. Here
many callers share the service, so they act on the caller's own jobs that a txt2img call of
this dialect submitted and still holds: never another key owner's, never a job submitted
natively. Each such job is remembered in the request cache (Redis where there are several API
processes, so any instance answers) for SYNC_WAIT_MAX_S and a minute, and found again among
the owner's newest jobs. The cache fails open: while it is down, progress reports nothing and
interrupt stops nothing, and the txt2img calls themselves are unaffected.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.concurrency import run_in_threadpool

from api.wiring import Services
from dal.errors import JobAlreadyFinished
from dal.records import Job, JobStatus, utcnow

_MARK_PREFIX = "sdapi-held:"
_GRACE_S = 60
# How far back among the owner's newest jobs to look: jobs older than the synchronous wait
# are no longer held, so this only bounds an owner who submits very many jobs at once.
_PAGE = 50
_MAX_PAGES = 4


def _mark(job_id: str) -> str:
    return f"{_MARK_PREFIX}{job_id}"


async def remember(services: Services, job: Job) -> None:
    """Note that a txt2img call of this dialect holds `job` (run_to_completion's hook)."""
    ttl_s = int(services.settings.sync_wait_max_s) + _GRACE_S
    await run_in_threadpool(services.core.cache.put, _mark(job.id), job.owner, ttl_s=ttl_s)


def held_jobs(services: Services, owner: str) -> list[Job]:
    """The owner's queued or running jobs that txt2img calls of this dialect submitted and
    may still hold, oldest first."""
    horizon = utcnow() - timedelta(seconds=services.settings.sync_wait_max_s + _GRACE_S)
    cache = services.core.cache
    held: list[Job] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = services.job_service.list(owner=owner, limit=_PAGE, cursor=cursor)
        for job in page.items:
            if job.created_at < horizon:
                return held[::-1]
            if not job.status.is_terminal and cache.get(_mark(job.id)) == owner:
                held.append(job)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return held[::-1]


def current_job(services: Services, owner: str) -> Job | None:
    """The job A1111 would call "the current one": the oldest running, else the oldest
    queued."""
    held = held_jobs(services, owner)
    running = [job for job in held if job.status == JobStatus.RUNNING]
    first = running or held
    return first[0] if first else None


def interrupt(services: Services, owner: str) -> list[Job]:
    """Cancel the owner's held jobs; returns those it canceled."""
    canceled = []
    for job in held_jobs(services, owner):
        try:
            canceled.append(services.job_service.cancel(owner=owner, job_id=job.id))
        except JobAlreadyFinished:
            continue  # it ended meanwhile
    return canceled
