"""JobWaits: a waiting request wakes with the ended record when this process's finisher hands
it over (no store read), with a bare notice when only the job's id was heard (the bus), and
with nothing when its wait is over. A notice heard after the waiter's read began and before
its wait wakes it at once; one heard before that read does not."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from api.job_waits import NOTICES_KEPT, JobWaits, Wake
from dal.records import Job, JobParams, JobStatus

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def ended_job(job_id: str) -> Job:
    return Job(
        id=job_id,
        owner="alice",
        model="tiny",
        params=JobParams(
            prompt="a lighthouse",
            width=64,
            height=64,
            num_inference_steps=2,
            guidance_scale=7.5,
            seed=1,
        ),
        status=JobStatus.SUCCEEDED,
        created_at=NOW,
        updated_at=NOW,
        finished_at=NOW,
    )


async def wait_then(
    waits: JobWaits, job_id: str, notice: object, seconds: float = 5
) -> Wake | None:
    waiting = asyncio.create_task(waits.wait(job_id, seconds, since=time.monotonic()))
    await asyncio.sleep(0)  # registered
    if isinstance(notice, Job):
        waits.notify(job_id, notice)
    elif notice == "id":
        waits.notify(job_id)
    return await waiting


def test_the_finishers_record_reaches_the_waiter() -> None:
    job = ended_job("job-1")
    assert asyncio.run(wait_then(JobWaits(), "job-1", job)) == Wake(job)


def test_a_notice_by_id_wakes_without_a_record() -> None:
    assert asyncio.run(wait_then(JobWaits(), "job-1", "id")) == Wake(None)


def test_a_wait_that_runs_out_is_not_a_wake() -> None:
    async def run_out() -> Wake | None:
        return await JobWaits().wait("job-1", 0.01, since=time.monotonic())

    assert asyncio.run(run_out()) is None


def test_a_notice_for_another_job_does_not_wake() -> None:
    async def other() -> Wake | None:
        waits = JobWaits()
        waiting = asyncio.create_task(waits.wait("job-1", 0.05, since=time.monotonic()))
        await asyncio.sleep(0)
        waits.notify("job-2", ended_job("job-2"))
        return await waiting

    assert asyncio.run(other()) is None


def test_a_request_that_leaves_mid_wait_is_forgotten_and_a_later_notice_is_harmless() -> None:
    async def leave() -> Wake | None:
        waits = JobWaits()
        waiting = asyncio.create_task(waits.wait("job-1", 5, since=time.monotonic()))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        waits.notify("job-1", ended_job("job-1"))  # nobody left to wake
        await asyncio.sleep(0)
        # A new wait, after a read that began after that notice, starts clean.
        return await waits.wait("job-1", 0.01, since=time.monotonic())

    assert asyncio.run(leave()) is None


def test_a_notice_and_the_timeout_together_answer_once_without_error() -> None:
    job = ended_job("job-1")
    assert asyncio.run(wait_then(JobWaits(), "job-1", job, seconds=0)) in (None, Wake(job))


def test_a_notice_between_the_read_and_the_wait_wakes_at_once() -> None:
    """The job ends after the waiter's read began (it read `running`) and before its wait:
    the wait answers the kept notice instead of sleeping through its poll interval."""
    job = ended_job("job-1")

    async def race() -> tuple[Wake | None, float]:
        waits = JobWaits()
        read_began = time.monotonic()
        waits.notify("job-1", job)  # nobody is waiting yet
        started = time.monotonic()
        wake = await waits.wait("job-1", 30, since=read_began)
        return wake, time.monotonic() - started

    wake, waited = asyncio.run(race())
    assert wake == Wake(job)
    assert waited < 1


def test_a_notice_heard_before_the_read_began_does_not_wake() -> None:
    """That read saw the end (a notice follows the store's write), so the waiter read a job
    started again since (a dead letter replayed) and must wait for its new end."""

    async def reopened() -> Wake | None:
        waits = JobWaits()
        waits.notify("job-1", ended_job("job-1"))
        await asyncio.sleep(0.001)
        return await waits.wait("job-1", 0.05, since=time.monotonic())

    assert asyncio.run(reopened()) is None


def test_a_bare_notice_is_kept_as_heard() -> None:
    async def race() -> Wake | None:
        waits = JobWaits()
        read_began = time.monotonic()
        waits.notify("job-1")
        return await waits.wait("job-1", 30, since=read_began)

    assert asyncio.run(race()) == Wake(None)


def test_only_the_newest_notices_are_kept() -> None:
    async def flood() -> tuple[Wake | None, Wake | None]:
        waits = JobWaits()
        read_began = time.monotonic()
        for n in range(NOTICES_KEPT + 1):
            waits.notify(f"job-{n}")
        oldest = await waits.wait("job-0", 0.01, since=read_began)
        newest = await waits.wait(f"job-{NOTICES_KEPT}", 0.01, since=read_began)
        return oldest, newest

    assert asyncio.run(flood()) == (None, Wake(None))
