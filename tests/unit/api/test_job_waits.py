"""JobWaits: a waiting request wakes with the ended record when this process's finisher hands
it over (no store read), with a bare notice when only the job's id was heard (the bus), and
with nothing when its wait is over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from api.job_waits import JobWaits, Wake
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
    waiting = asyncio.create_task(waits.wait(job_id, seconds))
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
        return await JobWaits().wait("job-1", 0.01)

    assert asyncio.run(run_out()) is None


def test_a_notice_for_another_job_does_not_wake() -> None:
    async def other() -> Wake | None:
        waits = JobWaits()
        waiting = asyncio.create_task(waits.wait("job-1", 0.05))
        await asyncio.sleep(0)
        waits.notify("job-2", ended_job("job-2"))
        return await waiting

    assert asyncio.run(other()) is None


def test_a_request_that_leaves_mid_wait_is_forgotten_and_a_later_notice_is_harmless() -> None:
    async def leave() -> Wake | None:
        waits = JobWaits()
        waiting = asyncio.create_task(waits.wait("job-1", 5))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        waits.notify("job-1", ended_job("job-1"))  # nobody left to wake
        await asyncio.sleep(0)
        return await waits.wait("job-1", 0.01)  # a new wait starts clean

    assert asyncio.run(leave()) is None


def test_a_notice_and_the_timeout_together_answer_once_without_error() -> None:
    job = ended_job("job-1")
    assert asyncio.run(wait_then(JobWaits(), "job-1", job, seconds=0)) in (None, Wake(job))
