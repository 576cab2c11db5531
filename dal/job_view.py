"""A job as clients see it: the response of GET /v1/jobs/{id} and the body of its webhook.
Below the API and the worker because both render it (the worker delivers the webhooks of the
jobs it ends). Image URLs are signed on the way out, never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field

from dal.ports import BlobStore
from dal.records import Job, JobStatus, QueuePlace

EXAMPLE_JOB_PARAMS: dict[str, Any] = {
    "prompt": "a lighthouse on a cliff at dawn, oil painting",
    "negative_prompt": "blurry, low quality",
    "width": 512,
    "height": 512,
    "num_inference_steps": 25,
    "guidance_scale": 7.5,
    "seed": 1234,
    "num_images": 1,
}


EXAMPLE_JOB: dict[str, Any] = {
    "id": "0f8c2d4e5b6a47f1a2b3c4d5e6f70819",
    "status": "succeeded",
    "progress": 1.0,
    "model": "tiny-sd",
    "created_at": "2026-11-27T12:00:00Z",
    "updated_at": "2026-11-27T12:00:03Z",
    "started_at": "2026-11-27T12:00:01Z",
    "finished_at": "2026-11-27T12:00:03Z",
    "attempts": 1,
    "error": None,
    "params": {**EXAMPLE_JOB_PARAMS},
    "images": [
        {
            "url": "https://api.example.com/v1/blobs/images/ab12/0f8c/0.png?expires=1790000000&sig=...",
            "expires_at": "2026-11-27T12:15:03Z",
            "width": 512,
            "height": 512,
            "seed": 1234,
        }
    ],
    "queue_position": None,
    "estimated_start_at": None,
    "webhook": {
        "url": "https://hooks.example.com/txt2img",
        "deliveries": [
            {
                "attempt": 1,
                "event": "job.succeeded",
                "attempted_at": "2026-11-27T12:00:03Z",
                "status_code": 503,
                "error": None,
                "succeeded": False,
            },
            {
                "attempt": 2,
                "event": "job.succeeded",
                "attempted_at": "2026-11-27T12:00:05Z",
                "status_code": 204,
                "error": None,
                "succeeded": True,
            },
        ],
    },
}


class ImageOut(BaseModel):
    url: str = Field(description="Signed URL; GET it without credentials before it expires.")
    expires_at: datetime
    width: int
    height: int
    seed: int


class JobErrorOut(BaseModel):
    code: str
    message: str


class WebhookDeliveryOut(BaseModel):
    attempt: int
    event: str = Field(description="`job.succeeded`, `job.failed` or `job.canceled`.")
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's answer; null: none at all.")
    error: str | None
    succeeded: bool


class WebhookOut(BaseModel):
    url: str
    deliveries: list[WebhookDeliveryOut] = Field(description="Every attempt, oldest first.")


class JobParamsOut(BaseModel):
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_JOB]})

    id: str
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    model: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    error: JobErrorOut | None
    params: JobParamsOut
    images: list[ImageOut]
    webhook: WebhookOut | None = Field(
        default=None, description="Present when the job was submitted with a webhook_url."
    )
    queue_position: int | None = Field(
        default=None,
        ge=0,
        description=(
            "While the job is queued: how many jobs will be handed to the GPUs before it, in "
            "the current fair order between users (0: it is next, or handed over already). An "
            "estimate: other users' new jobs may go ahead of it, since each user gets a fair "
            "turn. Null once it runs or ends."
        ),
    )
    estimated_start_at: datetime | None = Field(
        default=None,
        description=(
            "While the job waits its turn: when it should be handed to the GPUs, projected from "
            "the rate at which jobs have ended lately. An estimate; null when nothing has been "
            "measured yet, once it is handed over, and once it runs or ends."
        ),
    )


def render_job(
    job: Job,
    *,
    blobs: BlobStore,
    url_ttl: timedelta,
    base_url: str,
    place: QueuePlace | None = None,
) -> JobOut:
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
        queue_position=place.position if place is not None else None,
        estimated_start_at=place.estimated_start_at if place is not None else None,
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
