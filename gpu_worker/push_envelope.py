"""The body Pub/Sub POSTs to a push endpoint, parsed strictly: anything else is a 400."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    data: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    message_id: str = Field(alias="messageId", min_length=1)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message: _Message
    subscription: str = ""
    # Only sent by real Pub/Sub, and only when the subscription has a dead-letter policy.
    delivery_attempt: int | None = Field(default=None, alias="deliveryAttempt")


class MalformedEnvelope(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PushMessage:
    message_id: str
    job_id: str | None
    data: bytes
    attributes: dict[str, str]
    subscription: str
    delivery_attempt: int | None


def parse_push_body(body: bytes) -> PushMessage:
    try:
        envelope = _Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedEnvelope(f"not a Pub/Sub push envelope: {exc.errors()[0]['msg']}") from exc
    try:
        data = base64.b64decode(envelope.message.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEnvelope("message.data is not base64") from exc
    job_id = envelope.message.attributes.get("job_id") or _job_id_from_data(data)
    return PushMessage(
        message_id=envelope.message.message_id,
        job_id=job_id,
        data=data,
        attributes=envelope.message.attributes,
        subscription=envelope.subscription,
        delivery_attempt=envelope.delivery_attempt,
    )


def _job_id_from_data(data: bytes) -> str | None:
    try:
        value = json.loads(data).get("job_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None
