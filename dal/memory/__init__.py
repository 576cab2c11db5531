"""In-memory adapters: real implementations of every port, for tests and the `test` profile."""

from dal.memory.blob_store import MemoryBlobStore
from dal.memory.fair_line import MemoryFairLine
from dal.memory.job_events import MemoryJobEvents
from dal.memory.job_queue import MemoryJobQueue
from dal.memory.job_store import MemoryJobStore
from dal.memory.key_revocations import LocalKeyRevocations
from dal.memory.key_store import MemoryApiKeyStore
from dal.memory.rate_limiter import MemoryRateLimiter
from dal.memory.request_cache import MemoryRequestCache

__all__ = [
    "LocalKeyRevocations",
    "MemoryApiKeyStore",
    "MemoryBlobStore",
    "MemoryFairLine",
    "MemoryJobEvents",
    "MemoryJobQueue",
    "MemoryJobStore",
    "MemoryRateLimiter",
    "MemoryRequestCache",
]
