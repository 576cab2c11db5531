"""Request and response bodies of API v1. Strict: no type coercion, no unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dal.job_view import EXAMPLE_JOB, EXAMPLE_JOB_PARAMS, JobOut
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


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{**EXAMPLE_JOB_PARAMS, "webhook_url": "https://hooks.example.com/txt2img"}]
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


# A truncated, made-up value for the OpenAPI example.
EXAMPLE_OWNER_SIGNING_KEY = "whsec_pX3k0aQe7Vn1uJb9Lc2..."


class WebhookSecretOut(BaseModel):
    """Your webhook signing secret and how deliveries are signed with it: Standard Webhooks."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "secret": EXAMPLE_OWNER_SIGNING_KEY,
                    "specification": "https://www.standardwebhooks.com",
                    "algorithm": "HMAC-SHA256",
                    "signed_content": "{webhook-id}.{webhook-timestamp}.{body}",
                    "signature_header": "webhook-signature",
                    "signature_format": "v1,{base64 signature}",
                }
            ]
        }
    )

    secret: str = Field(
        description="Your Standard Webhooks signing secret: `whsec_` + base64 of the HMAC key. "
        "Pass it as is to a Standard Webhooks library."
    )
    specification: Literal["https://www.standardwebhooks.com"] = "https://www.standardwebhooks.com"
    algorithm: Literal["HMAC-SHA256"] = "HMAC-SHA256"
    signed_content: str = "{webhook-id}.{webhook-timestamp}.{body}"
    signature_header: str = "webhook-signature"
    signature_format: str = Field(
        default="v1,{base64 signature}",
        description="Space-separated when there are several; one matching is enough.",
    )


class JobListOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [EXAMPLE_JOB], "next_cursor": None}]}
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
