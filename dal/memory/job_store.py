from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from dal.errors import IdempotencyKeyReused, JobNotFound, TransitionConflict
from dal.paging import decode_cursor, encode_cursor, sort_key
from dal.quota_rules import check_admission
from dal.records import (
    ENQUEUE_FAILED,
    Job,
    JobChanges,
    JobError,
    JobStatus,
    Page,
    WebhookDelivery,
    is_dead_lettered,
    legal_sources,
    utcnow,
)
from dal.requeue import handed_over_again, lease_lapsed, requeued_after_lapse
from dal.webhooks.state import has_succeeded, is_owed


class MemoryJobStore:
    """A JobStore in a dict, guarded by one lock so conditional transitions are atomic."""

    def __init__(self, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._jobs: dict[str, Job] = {}
        self._by_idempotency_key: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def create(self, job: Job) -> Job:
        with self._lock:
            self._refuse_duplicate_locked(job)
            return self._insert_locked(job)

    def create_within(
        self, job: Job, *, max_in_flight: int, images_per_day: int, day_start: datetime
    ) -> Job:
        # One lock over the counts and the insert: no other admission sees the same count.
        with self._lock:
            self._refuse_duplicate_locked(job)
            check_admission(
                job,
                max_in_flight=max_in_flight,
                images_per_day=images_per_day,
                day_start=day_start,
                count_in_flight=lambda: self._count_in_flight_locked(job.owner),
                count_images_since=lambda since: self._count_images_since_locked(job.owner, since),
            )
            return self._insert_locked(job)

    def _refuse_duplicate_locked(self, job: Job) -> None:
        if job.id in self._jobs:
            raise ValueError(f"job {job.id!r} already exists")
        if job.idempotency_key is not None:
            existing_id = self._by_idempotency_key.get((job.owner, job.idempotency_key))
            if existing_id is not None:
                raise IdempotencyKeyReused(self._jobs[existing_id])

    def _insert_locked(self, job: Job) -> Job:
        if job.idempotency_key is not None:
            self._by_idempotency_key[(job.owner, job.idempotency_key)] = job.id
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._get_locked(job_id)

    def list_by_owner(self, owner: str, *, limit: int, cursor: str | None = None) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = decode_cursor(cursor) if cursor is not None else None
        with self._lock:
            mine = sorted(
                (j for j in self._jobs.values() if j.owner == owner), key=sort_key, reverse=True
            )
        if after is not None:
            mine = [j for j in mine if sort_key(j) < after]
        items = tuple(mine[:limit])
        next_cursor = encode_cursor(items[-1]) if len(mine) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def list_by_status(self, status: JobStatus, *, limit: int) -> Sequence[Job]:
        with self._lock:
            matching = sorted((j for j in self._jobs.values() if j.status == status), key=sort_key)
        return matching[:limit]

    def transition(
        self,
        job_id: str,
        *,
        expected: Collection[JobStatus],
        target: JobStatus,
        changes: JobChanges | None = None,
    ) -> Job:
        expected_set = legal_sources(expected, target)
        with self._lock:
            job = self._get_locked(job_id)
            if job.status not in expected_set:
                raise TransitionConflict(job, expected_set)
            updated = (changes or JobChanges()).apply(job, target, self._clock())
            self._jobs[job_id] = updated
            return updated

    def claim(self, job_id: str, *, lease_s: float) -> Job:
        with self._lock:
            job = self._get_locked(job_id)
            now = self._clock()
            if job.status != JobStatus.QUEUED and not lease_lapsed(job, now):
                raise TransitionConflict(job, frozenset({JobStatus.QUEUED}))
            updated = job.with_changes(
                status=JobStatus.RUNNING,
                attempts=job.attempts + 1,
                started_at=job.started_at or now,
                lease_expires_at=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
            self._jobs[job_id] = updated
            return updated

    def release(self, job_id: str, *, error: JobError) -> Job:
        return self.transition(
            job_id,
            expected={JobStatus.RUNNING},
            target=JobStatus.QUEUED,
            changes=JobChanges(error=error),
        )

    def requeue_lapsed(self, job_id: str, *, error: JobError, at: datetime) -> Job:
        with self._lock:
            now = self._clock()
            updated = requeued_after_lapse(self._get_locked(job_id), error=error, at=at, now=now)
            self._jobs[job_id] = updated
            return updated

    def requeue_unclaimed(self, job_id: str, *, enqueued_before: datetime, at: datetime) -> Job:
        with self._lock:
            job = self._get_locked(job_id)
            updated = handed_over_again(
                job, enqueued_before=enqueued_before, at=at, now=self._clock()
            )
            self._jobs[job_id] = updated
            return updated

    def reopen_dead_lettered(self, job_id: str) -> Job:
        with self._lock:
            job = self._get_locked(job_id)
            if not is_dead_lettered(job):
                raise TransitionConflict(job, frozenset({JobStatus.FAILED}))
            updated = job.with_changes(
                status=JobStatus.QUEUED,
                error=None,
                progress=0.0,
                finished_at=None,
                lease_expires_at=None,
                updated_at=self._clock(),
            )
            self._jobs[job_id] = updated
            return updated

    def record_progress(self, job_id: str, progress: float, *, lease_s: float | None = None) -> Job:
        with self._lock:
            job = self._get_locked(job_id)
            if job.status != JobStatus.RUNNING:
                return job
            now = self._clock()
            lease = job.lease_expires_at if lease_s is None else now + timedelta(seconds=lease_s)
            updated = job.with_changes(progress=progress, updated_at=now, lease_expires_at=lease)
            self._jobs[job_id] = updated
            return updated

    def record_webhook_delivery(self, job_id: str, delivery: WebhookDelivery) -> Job:
        with self._lock:
            job = self._get_locked(job_id)
            if has_succeeded(job, delivery.event):
                return job
            updated = job.with_changes(webhook_deliveries=(*job.webhook_deliveries, delivery))
            self._jobs[job_id] = updated
            return updated

    def list_owed_webhooks(
        self, *, since: datetime, max_attempts: int, limit: int
    ) -> Sequence[Job]:
        with self._lock:
            matching = sorted(
                (
                    j
                    for j in self._jobs.values()
                    if j.created_at >= since and is_owed(j, max_attempts=max_attempts)
                ),
                key=sort_key,
            )
        return matching[: max(limit, 0)]

    def ping(self) -> None:
        return None

    def count_in_flight(self, owner: str) -> int:
        with self._lock:
            return self._count_in_flight_locked(owner)

    def count_images_since(self, owner: str, since: datetime) -> int:
        with self._lock:
            return self._count_images_since_locked(owner, since)

    def _count_in_flight_locked(self, owner: str) -> int:
        return sum(
            1
            for j in self._jobs.values()
            if j.owner == owner and j.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        )

    def _count_images_since_locked(self, owner: str, since: datetime) -> int:
        return sum(
            j.params.num_images
            for j in self._jobs.values()
            if j.owner == owner and j.created_at >= since and not _enqueue_failed(j)
        )

    def mark_enqueued(self, job_id: str, *, at: datetime) -> Job:
        with self._lock:
            job = self._get_locked(job_id)
            if job.enqueued_at is None:
                job = job.with_changes(enqueued_at=at)
                self._jobs[job_id] = job
            return job

    def list_unenqueued(self, *, created_before: datetime, limit: int) -> Sequence[Job]:
        with self._lock:
            matching = sorted(
                (
                    j
                    for j in self._jobs.values()
                    if j.status == JobStatus.QUEUED
                    and j.enqueued_at is None
                    and j.created_at < created_before
                ),
                key=sort_key,
            )
        return matching[: max(limit, 0)]

    def _get_locked(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None


def _enqueue_failed(job: Job) -> bool:
    return (
        job.status == JobStatus.FAILED
        and job.error is not None
        and job.error.code == ENQUEUE_FAILED
    )
