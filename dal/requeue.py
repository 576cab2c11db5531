"""The two ways a job goes back to the queue without a worker's say, decided here for every store
(the memory and Firestore adapters apply these to the record they read; the SQL adapter writes
the same conditions as one UPDATE):

* its worker died: `running` under a lease that has lapsed → `queued`, the lease dropped;
* its message was lost: `queued`, handed to the queue at or before a bound, never claimed → it
  is handed over again (the caller publishes a new message).

Each counts a handover and sets `enqueued_at` to the new hand-over time. A job in any other
state raises TransitionConflict with its record, so of several sweepers one wins.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from dal.errors import TransitionConflict
from dal.records import Job, JobError, JobStatus


def lease_lapsed(job: Job, now: datetime) -> bool:
    return (
        job.status == JobStatus.RUNNING
        and job.lease_expires_at is not None
        and job.lease_expires_at <= now
    )


def requeued_after_lapse(job: Job, *, error: JobError, at: datetime, now: datetime) -> Job:
    if not lease_lapsed(job, now):
        raise TransitionConflict(job, frozenset({JobStatus.RUNNING}))
    return replace(
        job,
        status=JobStatus.QUEUED,
        lease_expires_at=None,
        error=error,
        enqueued_at=at,
        handovers=job.handovers + 1,
        updated_at=now,
    )


def handed_over_again(job: Job, *, enqueued_before: datetime, at: datetime, now: datetime) -> Job:
    if (
        job.status != JobStatus.QUEUED
        or job.enqueued_at is None
        or job.enqueued_at > enqueued_before
    ):
        raise TransitionConflict(job, frozenset({JobStatus.QUEUED}))
    return replace(job, enqueued_at=at, handovers=job.handovers + 1, updated_at=now)
