"""Turns job records into API responses, signing image URLs on the way out. The same view is
the body of a job's webhook (rendered by whichever process delivers it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from api.schemas import (
    ImageOut,
    JobErrorOut,
    JobOut,
    JobParamsOut,
    WebhookDeliveryOut,
    WebhookOut,
)
from dal.ports import BlobStore
from dal.records import Job

if TYPE_CHECKING:
    from api.wiring import Services


def job_view(job: Job, services: Services, base_url: str) -> JobOut:
    return render_job(job, blobs=services.blobs, url_ttl=services.signed_url_ttl, base_url=base_url)


def render_job(job: Job, *, blobs: BlobStore, url_ttl: timedelta, base_url: str) -> JobOut:
    images = []
    for ref in job.images:
        signed = blobs.signed_url(ref.key, expires_in=url_ttl)
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
        webhook=_webhook_view(job),
    )


def _webhook_view(job: Job) -> WebhookOut | None:
    if job.webhook_url is None:
        return None
    return WebhookOut(
        url=job.webhook_url,
        deliveries=[
            WebhookDeliveryOut(
                attempt=d.attempt,
                event=d.event,
                attempted_at=d.attempted_at,
                status_code=d.status_code,
                error=d.error,
                succeeded=d.succeeded,
            )
            for d in job.webhook_deliveries
        ],
    )


def webhook_body_renderer(
    blobs: BlobStore, url_ttl: timedelta, base_url: str
) -> Callable[[Job], bytes]:
    """The dispatcher's `render`: a job's public view as JSON bytes. Without PUBLIC_BASE_URL,
    image URLs of API-served blobs stay path-absolute (no request to take an origin from)."""

    def render(job: Job) -> bytes:
        view = render_job(job, blobs=blobs, url_ttl=url_ttl, base_url=base_url)
        return view.model_dump_json().encode()

    return render
