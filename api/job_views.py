"""Turns job records into API responses, signing image URLs on the way out."""

from __future__ import annotations

from urllib.parse import urljoin

from api.schemas import ImageOut, JobErrorOut, JobOut, JobParamsOut
from api.wiring import Services
from dal.records import Job


def job_view(job: Job, services: Services, base_url: str) -> JobOut:
    images = []
    for ref in job.images:
        signed = services.blobs.signed_url(ref.key, expires_in=services.signed_url_ttl)
        images.append(
            ImageOut(
                # Path-absolute URLs (blobs served by this API) become absolute; GCS URLs
                # are already absolute and pass through unchanged.
                url=urljoin(base_url, signed.url),
                expires_at=signed.expires_at,
                width=ref.width,
                height=ref.height,
                seed=ref.seed,
            )
        )
    return JobOut(
        id=job.id,
        status=job.status,
        progress=job.progress,
        model=job.model,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        error=JobErrorOut(code=job.error.code, message=job.error.message) if job.error else None,
        params=JobParamsOut(**job.params.to_dict()),
        images=images,
    )
