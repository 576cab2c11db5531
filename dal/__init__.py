"""Data access layer: domain records, ports (typing.Protocol) and their adapters.

Importing `dal` connects to nothing; adapters are built by each process's wiring function.
"""

from dal.errors import (
    BlobNotFound,
    DalError,
    IdempotencyKeyReused,
    InvalidCursor,
    JobNotFound,
    NotFound,
    StoreUnavailable,
    TransitionConflict,
)
from dal.ports import (
    ApiKeyStore,
    BlobStore,
    JobQueue,
    JobStore,
    RateLimitDecision,
    RateLimiter,
    SignedUrl,
)
from dal.records import (
    ApiKey,
    ImageRef,
    Job,
    JobChanges,
    JobError,
    JobParams,
    JobStatus,
    Page,
)

__all__ = [
    "ApiKey",
    "ApiKeyStore",
    "BlobNotFound",
    "BlobStore",
    "DalError",
    "IdempotencyKeyReused",
    "ImageRef",
    "InvalidCursor",
    "Job",
    "JobChanges",
    "JobError",
    "JobNotFound",
    "JobParams",
    "JobQueue",
    "JobStatus",
    "JobStore",
    "NotFound",
    "Page",
    "RateLimitDecision",
    "RateLimiter",
    "SignedUrl",
    "StoreUnavailable",
    "TransitionConflict",
]
