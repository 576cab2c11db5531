"""The DAL's own exceptions. Adapters translate vendor errors into these; the API maps them
to HTTP at its edge.

    DalError
    ├── NotFound
    │   ├── JobNotFound
    │   └── BlobNotFound
    ├── TransitionConflict        a conditional transition found the job in another status
    ├── IdempotencyKeyReused      a job with this owner + Idempotency-Key already exists
    ├── InvalidCursor             a paging cursor that this store did not issue
    └── StoreUnavailable          the backing service cannot be reached now (retry later)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dal.records import Job, JobStatus


class DalError(Exception):
    """Base of every error a DAL adapter raises on purpose."""


class NotFound(DalError):
    pass


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class BlobNotFound(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__(f"blob {key!r} does not exist")
        self.key = key


class TransitionConflict(DalError):
    """The job was not in one of the expected statuses, so nothing changed."""

    def __init__(self, job: Job, expected: frozenset[JobStatus]) -> None:
        wanted = ", ".join(sorted(s.value for s in expected))
        super().__init__(f"job {job.id!r} is {job.status.value}, expected one of: {wanted}")
        self.job = job
        self.expected = expected


class IdempotencyKeyReused(DalError):
    def __init__(self, existing: Job) -> None:
        super().__init__(f"idempotency key already used by job {existing.id!r}")
        self.existing = existing


class InvalidCursor(DalError):
    pass


class StoreUnavailable(DalError):
    """Transient: the database, bucket or broker did not answer. Safe to retry."""


class GenerationError(Exception):
    """A generation failed. `code` is machine-readable; `retryable` says whether trying again
    later (another instance, more memory free) could succeed."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
