"""The one place that decides what a job's end means.

Every terminal transition goes through a `JobFinisher`: the runner's success and failure, the
owner's cancel, a failed restart, a publish that failed or was given up, the queue's dead
letter and a replay that could not publish. Each writes the transition conditionally (exactly
one caller wins) and then, only for the winner, runs the ending's side effects once:

* the `txt2img_jobs_finished_total` metric, by status;
* the handlers the process registered, in order: free the job's slot in the line for the GPUs
  (dal.dispatcher, first: before anyone hears of the ending and submits again), remember a
  succeeded job for dedupe, publish the job event (API processes wake their waiters), wake this
  process's own waiters, schedule the webhook. A handler that fails is logged and skipped; the
  job's outcome never depends on it (each has a fallback: waiters re-read the store, the
  webhook redrive finds owed jobs, a sweep pass frees a slot left held).

A transition that loses (the job ended meanwhile) runs nothing: whoever won ran the effects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from dal.errors import JobNotFound, TransitionConflict
from dal.ports import JobStore
from dal.records import (
    DEAD_LETTERED,
    ENQUEUE_FAILED,
    ImageRef,
    Job,
    JobChanges,
    JobError,
    JobStatus,
    utcnow,
)
from dal.telemetry.metrics import JOBS_FINISHED

log = logging.getLogger(__name__)

# Told the terminal record of a job that has just ended; must not block.
EndHandler = Callable[[Job], None]

OWNER_CANCELED = JobError("canceled", "canceled by its owner")
WORKER_RESTARTED = JobError(
    "worker_restarted",
    "the process running this job stopped before it finished; submit again",
)


@dataclass(frozen=True, slots=True)
class NamedHandler:
    name: str  # for the log line when it fails
    handle: EndHandler


class JobFinisher:
    def __init__(
        self,
        jobs: JobStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        dead_letter_after_attempts: int = 0,
    ) -> None:
        """`dead_letter_after_attempts`: a dead letter ends a job only once the job itself was
        tried that often (MAX_DELIVERY_ATTEMPTS). Fewer attempts mean the messages died
        without reaching a worker (all of them down, say): the job still needs a GPU, and the
        sweep hands it to the queue again (api/job_recovery.py)."""
        self._jobs = jobs
        self._handlers: list[NamedHandler] = []
        self._clock = clock
        self._dead_letter_after = dead_letter_after_attempts

    def add_handler(self, name: str, handle: EndHandler, *, first: bool = False) -> None:
        """Register a side effect of every ending from now on (composition roots only);
        `first`: before those registered so far."""
        if first:
            self._handlers.insert(0, NamedHandler(name, handle))
        else:
            self._handlers.append(NamedHandler(name, handle))

    # ---- the endings ----------------------------------------------------------------------

    def succeed(self, job_id: str, images: tuple[ImageRef, ...]) -> Job:
        """running → succeeded with its images. Raises TransitionConflict (canceled meanwhile,
        or another worker finished it after our lease lapsed), JobNotFound, StoreUnavailable."""
        return self._end(
            job_id,
            expected={JobStatus.RUNNING},
            target=JobStatus.SUCCEEDED,
            changes=JobChanges(
                progress=1.0, finished_at=self._now(), images=images, clear_error=True
            ),
        )

    def fail(
        self,
        job_id: str,
        error: JobError,
        *,
        expected: Collection[JobStatus] = (JobStatus.RUNNING,),
    ) -> Job:
        """`expected` → failed with `error`. Raises TransitionConflict, JobNotFound,
        StoreUnavailable."""
        return self._end(
            job_id,
            expected=expected,
            target=JobStatus.FAILED,
            changes=JobChanges(finished_at=self._now(), error=error),
        )

    def fail_unqueued(self, job_id: str, message: str) -> Job:
        """A queued job that never reached the queue (publish failed, or the outbox gave up):
        failed `enqueue_failed`, which does not count against the daily image quota."""
        return self.fail(job_id, JobError(ENQUEUE_FAILED, message), expected={JobStatus.QUEUED})

    def cancel(self, job_id: str) -> Job:
        """The owner's cancel: queued or running → canceled. A runner generating it notices at
        its next check and stores nothing. Raises TransitionConflict when already ended."""
        return self._end(
            job_id,
            expected={JobStatus.QUEUED, JobStatus.RUNNING},
            target=JobStatus.CANCELED,
            changes=JobChanges(finished_at=self._now(), error=OWNER_CANCELED),
        )

    def dead_letter(self, job_id: str, detail: str) -> Job | None:
        """The queue gave up on the job's message: fail it `dead_lettered` unless it ended
        meanwhile, a worker holds a live lease on it, or it was tried fewer than
        `dead_letter_after_attempts` times. Returns the failed record, or None when nothing
        changed."""
        try:
            job = self._jobs.get(job_id)
        except JobNotFound:
            return None
        if job.attempts < self._dead_letter_after:
            return None
        now = self._now()
        expected = {JobStatus.QUEUED}
        if job.status == JobStatus.RUNNING and (
            job.lease_expires_at is None or job.lease_expires_at <= now
        ):
            expected.add(JobStatus.RUNNING)
        if job.status not in expected:
            return None
        last = f" (last error: {job.error.code}: {job.error.message})" if job.error else ""
        try:
            return self.fail(job_id, JobError(DEAD_LETTERED, f"{detail}{last}"), expected=expected)
        except TransitionConflict:
            return None

    # ---- the one path ---------------------------------------------------------------------

    def _end(
        self,
        job_id: str,
        *,
        expected: Collection[JobStatus],
        target: JobStatus,
        changes: JobChanges,
    ) -> Job:
        ended = self._jobs.transition(job_id, expected=expected, target=target, changes=changes)
        self._ended(ended)
        return ended

    def _ended(self, job: Job) -> None:
        JOBS_FINISHED.labels(job.status.value).inc()
        for handler in self._handlers:
            try:
                handler.handle(job)
            except Exception:
                log.warning("job %s ended: %s failed", job.id, handler.name, exc_info=True)

    def _now(self) -> datetime:
        return self._clock()
