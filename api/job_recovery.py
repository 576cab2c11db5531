"""Recovery driven by the job store: the store, not the queue, says which jobs still need a GPU.
A queue message is a wake-up call; when it is lost, or the worker that took it dies, the sweep
(every API process, every OUTBOX_SWEEP_INTERVAL_S, and `txt2img-admin outbox sweep` on a
schedule) hands the job to the queue again:

* **a dead worker**: a job `running` whose lease has lapsed (its worker renews it every
  JOB_HEARTBEAT_S while it lives) goes back to `queued` and is published again, counted in
  `handovers`; one whose attempts reached MAX_DELIVERY_ATTEMPTS is failed `lease_expired`
  instead, so a job that kills its worker every time cannot loop;
* **a lost message**: a job `queued`, handed to the queue REQUEUE_AFTER_S ago and never
  claimed, is published again (every REQUEUE_AFTER_S four times, then twice as long each time,
  at most 10 minutes); after MAX_HANDOVERS it is failed `not_started`.

Each hand-over is a conditional write first (dal.requeue): of several sweepers, one wins and
publishes. Publishing a job twice is harmless: a worker claims it once and acknowledges the
other delivery. Every failure goes through the job finisher. docs/operations.md ("Leases and
recovery") has the arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from dal.core import Core
from dal.errors import DalError, QueueUnavailable, TransitionConflict
from dal.finisher import JobFinisher
from dal.ports import JobQueue, JobStore
from dal.records import Job, JobError, JobStatus, utcnow
from dal.requeue import lease_lapsed
from dal.telemetry.metrics import JOBS_HANDED_OVER

log = logging.getLogger(__name__)

LEASE_EXPIRED = "lease_expired"
NOT_STARTED = "not_started"
MAX_REQUEUE_SPACING_S = 600.0
EVEN_HANDOVERS = 4

RecoveryAction = Literal[
    "taken-back",
    "handed-over",
    "failed",
    "would-take-back",
    "would-hand-over",
    "would-fail",
    "skipped",
]


@dataclass(frozen=True, slots=True)
class Recovered:
    job_id: str
    action: RecoveryAction
    detail: str


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    requeue_after_s: float = 30.0
    max_handovers: int = 20
    max_attempts: int = 5

    def requeue_spacing(self, handovers: int) -> timedelta:
        """How long after its last hand-over an unclaimed job is handed over again:
        REQUEUE_AFTER_S for the first EVEN_HANDOVERS (a worker that is down for a couple of
        minutes finds fresh messages the moment it is back), then twice as long each time,
        at most 10 minutes (a queue that keeps losing one job is not flooded)."""
        doublings = min(max(handovers - EVEN_HANDOVERS + 1, 0), 20)
        return timedelta(seconds=min(self.requeue_after_s * 2**doublings, MAX_REQUEUE_SPACING_S))


class JobRecovery:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        finisher: JobFinisher,
        policy: RecoveryPolicy,
        *,
        batch_size: int = 100,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._finisher = finisher
        self._policy = policy
        self._batch_size = batch_size
        self._clock = clock

    def recover(self, *, dry_run: bool = False) -> list[Recovered]:
        """One pass over the oldest running and queued jobs (at most `batch_size` of each).
        Raises StoreUnavailable when the job store cannot be read."""
        now = self._clock()
        results = [
            self._take_back(job, now, dry_run)
            for job in self._jobs.list_by_status(JobStatus.RUNNING, limit=self._batch_size)
            if lease_lapsed(job, now)
        ]
        results += [
            self._hand_over(job, now, dry_run)
            for job in self._jobs.list_by_status(JobStatus.QUEUED, limit=self._batch_size)
            if job.enqueued_at is not None
            and job.enqueued_at <= now - self._policy.requeue_spacing(job.handovers)
        ]
        for result in results:
            if not result.action.startswith("would-"):
                log.warning("recovery: job %s %s (%s)", result.job_id, result.action, result.detail)
        return results

    def _take_back(self, job: Job, now: datetime, dry_run: bool) -> Recovered:
        lapsed_s = (now - job.lease_expires_at).total_seconds() if job.lease_expires_at else 0.0
        detail = f"its worker stopped renewing its lease {lapsed_s:.0f} s ago"
        if job.attempts >= self._policy.max_attempts:
            if dry_run:
                return Recovered(job.id, "would-fail", detail)
            error = JobError(
                LEASE_EXPIRED,
                f"its worker stopped during attempt {job.attempts} of at most "
                f"{self._policy.max_attempts}",
            )
            return self._fail(job, error, JobStatus.RUNNING, detail)
        if dry_run:
            return Recovered(job.id, "would-take-back", detail)
        try:
            requeued = self._jobs.requeue_lapsed(
                job.id, error=JobError(LEASE_EXPIRED, "its worker stopped; retried"), at=now
            )
        except TransitionConflict as conflict:
            # Its worker renewed after all, or another sweeper took it back first.
            return Recovered(job.id, "skipped", f"now {conflict.job.status.value}")
        JOBS_HANDED_OVER.labels("lease_expired").inc()
        return self._publish(requeued, "taken-back", detail)

    def _hand_over(self, job: Job, now: datetime, dry_run: bool) -> Recovered:
        waited_s = (now - (job.enqueued_at or now)).total_seconds()
        detail = f"handed to the queue {waited_s:.0f} s ago, never claimed"
        if job.handovers >= self._policy.max_handovers:
            if dry_run:
                return Recovered(job.id, "would-fail", detail)
            error = JobError(
                NOT_STARTED,
                f"no worker took it after {job.handovers + 1} hand-overs to the queue; "
                "submit again",
            )
            return self._fail(job, error, JobStatus.QUEUED, detail)
        if dry_run:
            return Recovered(job.id, "would-hand-over", detail)
        bound = now - self._policy.requeue_spacing(job.handovers)
        try:
            handed = self._jobs.requeue_unclaimed(job.id, enqueued_before=bound, at=now)
        except TransitionConflict as conflict:
            return Recovered(job.id, "skipped", f"now {conflict.job.status.value}")
        JOBS_HANDED_OVER.labels("message_lost").inc()
        return self._publish(handed, "handed-over", detail)

    def _publish(self, job: Job, action: RecoveryAction, detail: str) -> Recovered:
        try:
            self._queue.enqueue(job)
        except QueueUnavailable as exc:
            # Its enqueued_at says it was handed over now: the next hand-over tries again.
            return Recovered(job.id, "skipped", f"{detail}; publish failed: {exc}")
        return Recovered(job.id, action, f"{detail}; hand-over {job.handovers}")

    def _fail(self, job: Job, error: JobError, status: JobStatus, detail: str) -> Recovered:
        try:
            self._finisher.fail(job.id, error, expected={status})
        except TransitionConflict as conflict:
            return Recovered(job.id, "skipped", f"now {conflict.job.status.value}")
        except DalError as exc:
            return Recovered(job.id, "skipped", f"could not fail it: {exc}")
        return Recovered(job.id, "failed", f"{detail}; {error.code}")


def build_recovery(core: Core, queue: JobQueue) -> JobRecovery:
    settings = core.settings
    return JobRecovery(
        core.jobs,
        queue,
        core.finisher,
        RecoveryPolicy(
            requeue_after_s=settings.requeue_after_s,
            max_handovers=settings.max_handovers,
            max_attempts=settings.max_delivery_attempts,
        ),
    )
