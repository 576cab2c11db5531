"""The body Pub/Sub POSTs to a push endpoint, parsed strictly: anything else is a 400. The job
message inside is decoded by dal.pubsub.message, as the pull worker's and the dead letters' are."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dal.errors import MalformedMessage
from dal.pubsub.message import JobMessage


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


def parse_push_body(body: bytes) -> JobMessage:
    """Raises MalformedMessage for a body that is not a push envelope; a readable envelope whose
    message names no valid job comes back with `job_id` None."""
    try:
        envelope = _Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedMessage(f"not a Pub/Sub push envelope: {exc.errors()[0]['msg']}") from exc
    try:
        data = base64.b64decode(envelope.message.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage("message.data is not base64") from exc
    return JobMessage.decode(
        message_id=envelope.message.message_id,
        data=data,
        attributes=envelope.message.attributes,
        delivery_attempt=envelope.delivery_attempt,
    )
