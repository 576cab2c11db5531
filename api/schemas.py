"""Request and response bodies of API v1. Strict: no type coercion, no unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dal.records import JobStatus
from dal.webhooks.urls import MAX_URL_LENGTH, WebhookUrlPolicy


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % 8:
        raise ValueError("must be a multiple of 8")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain non-whitespace characters")
    return value


ImageSide = Annotated[int, Field(ge=64, le=1024), AfterValidator(_multiple_of_8)]


def _webhook_url_shape(value: str | None) -> str | None:
    # Shape only here; the profile's rule (https, public addresses) is checked at submit.
    return None if value is None else WebhookUrlPolicy("any").check_syntax(value)


WebhookUrl = Annotated[
    str | None,
    Field(
        max_length=MAX_URL_LENGTH,
        description="Where to POST the finished job, signed (docs/api.md#webhooks). https "
        "to a public address in production; http to loopback is fine locally.",
    ),
    AfterValidator(_webhook_url_shape),
]

_EXAMPLE_REQUEST: dict[str, Any] = {
    "prompt": "a lighthouse on a cliff at dawn, oil painting",
    "negative_prompt": "blurry, low quality",
    "width": 512,
    "height": 512,
    "num_inference_steps": 25,
    "guidance_scale": 7.5,
    "seed": 1234,
    "num_images": 1,
}


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{**_EXAMPLE_REQUEST, "webhook_url": "https://hooks.example.com/txt2img"}]
        },
    )

    prompt: Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_not_blank)]
    negative_prompt: Annotated[str | None, Field(max_length=1000)] = None
    width: ImageSide | None = Field(default=None, description="Default: the model's size.")
    height: ImageSide | None = Field(default=None, description="Default: the model's size.")
    num_inference_steps: int | None = Field(default=None, ge=1, le=50)
    guidance_scale: float | None = Field(default=None, ge=0, le=20)
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="Default: random (and recorded)."
    )
    num_images: int = Field(default=1, ge=1, le=4)
    webhook_url: WebhookUrl = None


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


# A truncated, made-up value for the OpenAPI example.
EXAMPLE_OWNER_SIGNING_KEY = "whsec_3f1c..."


class WebhookSecretOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "secret": EXAMPLE_OWNER_SIGNING_KEY,
                    "algorithm": "HMAC-SHA256",
                    "signed_content": "{Webhook-Timestamp}.{body}",
                    "signature_header": "Webhook-Signature",
                }
            ]
        }
    )

    secret: str = Field(description="Your signing secret; the key is its UTF-8 bytes.")
    algorithm: Literal["HMAC-SHA256"] = "HMAC-SHA256"
    signed_content: str = "{Webhook-Timestamp}.{body}"
    signature_header: str = "Webhook-Signature"


class JobParamsOut(BaseModel):
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int


_EXAMPLE_JOB: dict[str, Any] = {
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
    "params": {**_EXAMPLE_REQUEST},
    "images": [
        {
            "url": "https://api.example.com/v1/blobs/images/ab12/0f8c/0.png?expires=1790000000&sig=...",
            "expires_at": "2026-11-27T12:15:03Z",
            "width": 512,
            "height": 512,
            "seed": 1234,
        }
    ],
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


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_JOB]})

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


class JobListOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE_JOB], "next_cursor": None}]}
    )

    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/validation-error",
                    "title": "Request validation failed",
                    "status": 422,
                    "detail": "body.width: must be a multiple of 8",
                    "code": "validation-error",
                    "errors": [{"field": "body.width", "message": "must be a multiple of 8"}],
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    errors: list[FieldError] | None = None
    # Quota problems (429 quota-*): the limit, the current usage, and for the daily image
    # quota the images this request asked for.
    limit: int | None = None
    usage: int | None = None
    requested: int | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "failing"]
    checks: dict[str, str] = Field(default_factory=dict)
