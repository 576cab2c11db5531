"""The outbox sweeper: no job sits `queued` forever without a message behind it.

JobService records a job, publishes it, then marks it enqueued. If the process dies in
between, the job is queued with no enqueued_at. The sweeper finds such jobs once they are
older than OUTBOX_GRACE_S (longer than a publish takes), publishes them and marks them; once
one is older than OUTBOX_GIVE_UP_S it fails it `enqueue_failed` instead, so a client sees an
outcome.

With the fair dispatcher (dal.dispatcher), a queued job without the marker may just be waiting
in line for a GPU slot: the sweeper leaves those be, and jobs the line let through less than
OUTBOX_GRACE_S ago (their publisher is at work). The others it publishes through the
dispatcher, counted against its capacity: jobs let through whose publish failed or whose
process died, and jobs whose process died before they joined the line.

Any number of sweepers may run at once (every API process runs one, plus the admin command):
publishing a job twice is harmless because a worker claims a job exactly once and acknowledges
duplicates; the first enqueued mark wins; giving up is a conditional transition from queued.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from starlette.concurrency import run_in_threadpool

from dal.dispatcher import Dispatcher
from dal.errors import DalError, JobNotFound, QueueUnavailable, StoreUnavailable, TransitionConflict
from dal.finisher import JobFinisher
from dal.ports import JobQueue, JobStore
from dal.records import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

Action = Literal["enqueued", "would-enqueue", "failed", "would-fail", "skipped"]


@dataclass(frozen=True, slots=True)
class SweepResult:
    job_id: str
    action: Action
    detail: str


class OutboxSweeper:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        finisher: JobFinisher,
        *,
        grace_s: float,
        give_up_s: float,
        batch_size: int = 100,
        clock: Callable[[], datetime] = utcnow,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        if give_up_s <= grace_s:
            raise ValueError("give_up_s must be greater than grace_s")
        self._jobs = jobs
        self._queue = queue
        self._finisher = finisher
        self._grace = timedelta(seconds=grace_s)
        self._give_up = timedelta(seconds=give_up_s)
        self._batch_size = batch_size
        self._clock = clock
        self._dispatcher = dispatcher

    def sweep(self, *, dry_run: bool = False) -> list[SweepResult]:
        """One pass over at most `batch_size` stranded jobs, oldest first. Raises
        StoreUnavailable when the job store cannot be read; a job whose publish fails is
        skipped (and tried again on the next pass)."""
        now = self._clock()
        stranded = self._jobs.list_unenqueued(
            created_before=now - self._grace, limit=self._batch_size
        )
        results = [self._settle(job, now, dry_run) for job in stranded if not self._in_line(job)]
        for result in results:
            if result.action in ("enqueued", "failed"):
                log.warning("outbox: job %s %s (%s)", result.job_id, result.action, result.detail)
        return results

    def _in_line(self, job: Job) -> bool:
        """Waiting for its turn, or just let through: not stranded."""
        dispatcher = self._dispatcher
        return dispatcher is not None and (
            dispatcher.is_waiting(job.id)
            or dispatcher.handed_over_within(job.id, self._grace.total_seconds())
        )

    def _settle(self, job: Job, now: datetime, dry_run: bool) -> SweepResult:
        age_s = (now - job.created_at).total_seconds()
        if now - job.created_at >= self._give_up:
            detail = f"unpublished for {age_s:.0f} s"
            if dry_run:
                return SweepResult(job.id, "would-fail", detail)
            return self._give_up_on(job, detail)
        detail = f"unpublished after {age_s:.0f} s"
        if dry_run:
            return SweepResult(job.id, "would-enqueue", detail)
        if self._dispatcher is not None:
            # The list is a snapshot: the line may have let the job through, and a worker run
            # it, since. Publishing a job that is no longer stranded would only take a slot.
            try:
                current = self._jobs.get(job.id)
            except JobNotFound:
                return SweepResult(job.id, "skipped", "deleted")
            if current.status != JobStatus.QUEUED or current.enqueued_at is not None:
                return SweepResult(job.id, "skipped", f"now {current.status.value}, published")
            try:
                self._dispatcher.hand_over_now(current)
            except QueueUnavailable as exc:
                return SweepResult(job.id, "skipped", f"publish failed: {exc}")
            return SweepResult(job.id, "enqueued", detail)
        try:
            self._queue.enqueue(job)
        except QueueUnavailable as exc:
            return SweepResult(job.id, "skipped", f"publish failed: {exc}")
        try:
            self._jobs.mark_enqueued(job.id, at=self._clock())
        except DalError as exc:
            # Published; the next pass publishes it once more, which is harmless.
            return SweepResult(job.id, "enqueued", f"{detail}; not marked: {exc}")
        return SweepResult(job.id, "enqueued", detail)

    def _give_up_on(self, job: Job, detail: str) -> SweepResult:
        try:
            self._finisher.fail_unqueued(
                job.id, "the job could not be queued in time; submit again"
            )
        except TransitionConflict as conflict:
            # A worker got it after all, or another sweeper or its owner acted first.
            return SweepResult(job.id, "skipped", f"now {conflict.job.status.value}")
        return SweepResult(job.id, "failed", detail)


async def sweep_periodically(passes: Sequence[Callable[[], object]], interval_s: float) -> None:
    """Run each sweep pass every `interval_s` (jittered, so that instances started together
    spread out) until cancelled. A failed pass is logged and the next one tried."""
    while True:
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))  # noqa: S311 - jitter  # nosec B311
        for sweep in passes:
            try:
                await run_in_threadpool(sweep)
            except StoreUnavailable as exc:
                log.warning("sweep skipped: %s", exc)
            except Exception:
                log.exception("sweep failed")
