"""Cache keys for requests, shared by the API (which looks them up) and the workers (which
record finished jobs)."""

from __future__ import annotations

import hashlib
import json

from dal.records import Job, JobParams


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def idempotency_cache_key(owner: str, idempotency_key: str) -> str:
    return f"idem:{_digest(owner, idempotency_key)}"


def finished_request_key(owner: str, model: str, params: JobParams) -> str:
    """Identifies a seeded request: same owner, model and every parameter, seed included."""
    canonical = json.dumps(params.to_dict(), sort_keys=True, separators=(",", ":"))
    return f"done:{_digest(owner, model, canonical)}"


def finished_job_key(job: Job) -> str:
    return finished_request_key(job.owner, job.model, job.params)
