"""The job message on Pub/Sub, written and read in one place: the publisher encodes it; the push
endpoint, the pull worker and the dead-letter tools decode it with the same rules.

The data is `{"job_id": ...}`; the attributes carry what a worker or an operator wants without
a database read (job id, model, owner digest) plus the W3C trace context, so the API's and the
worker's log lines of one job join up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from dal.records import Job
from dal.trace_context import current_traceparent

JOB_ID_ATTRIBUTE = "job_id"
MODEL_ATTRIBUTE = "model"
OWNER_DIGEST_ATTRIBUTE = "owner_digest"
TRACEPARENT_ATTRIBUTE = "traceparent"
# Added by Pub/Sub when it moves a message to the dead-letter topic.
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSub"
DELIVERY_COUNT_ATTRIBUTE = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION_ATTRIBUTE = "CloudPubSubDeadLetterSourceSubscription"

# The API takes job ids of at most this length in its paths (api/routes/jobs.py, JobId), so a
# longer one names no job anyone could have submitted or look up: the message is unreadable.
MAX_JOB_ID_LENGTH = 64
# Pub/Sub refuses attribute values over 1024 bytes.
_MAX_ATTRIBUTE_VALUE = 1024


def encode(job: Job) -> tuple[bytes, dict[str, str]]:
    """The message for a job: (data, attributes)."""
    data = json.dumps({"job_id": job.id}, separators=(",", ":")).encode()
    attributes = {
        JOB_ID_ATTRIBUTE: job.id,
        MODEL_ATTRIBUTE: job.model[:_MAX_ATTRIBUTE_VALUE],
        OWNER_DIGEST_ATTRIBUTE: hashlib.sha256(job.owner.encode()).hexdigest()[:16],
    }
    traceparent = current_traceparent()
    if traceparent:
        attributes[TRACEPARENT_ATTRIBUTE] = traceparent
    return data, attributes


def decode_job_id(data: bytes, attributes: Mapping[str, str]) -> str | None:
    """The job a message is about: the `job_id` attribute if valid, else the JSON body's
    `job_id` if valid, else None. Valid: a non-empty string of at most MAX_JOB_ID_LENGTH."""
    return _valid_job_id(attributes.get(JOB_ID_ATTRIBUTE)) or _valid_job_id(_body_job_id(data))


def dead_letter_delivery_count(attributes: Mapping[str, str]) -> int | None:
    """How often Pub/Sub tried the message before dead-lettering it, if it says."""
    raw = attributes.get(DELIVERY_COUNT_ATTRIBUTE)
    # isdigit alone lets through digits int() refuses, such as "²".
    return int(raw) if raw and raw.isascii() and raw.isdigit() else None


@dataclass(frozen=True, slots=True)
class JobMessage:
    """A received job message, decoded; `job_id` is None when it names no readable job."""

    message_id: str
    job_id: str | None
    data: bytes
    attributes: dict[str, str]
    # Only set by Pub/Sub when the subscription has a dead-letter policy.
    delivery_attempt: int | None

    @classmethod
    def decode(
        cls,
        *,
        message_id: str,
        data: bytes,
        attributes: Mapping[str, str],
        delivery_attempt: int | None,
    ) -> JobMessage:
        return cls(
            message_id=message_id,
            job_id=decode_job_id(data, attributes),
            data=data,
            attributes=dict(attributes),
            delivery_attempt=delivery_attempt,
        )

    @property
    def traceparent(self) -> str | None:
        return self.attributes.get(TRACEPARENT_ATTRIBUTE)

    @property
    def dead_letter_delivery_count(self) -> int | None:
        return dead_letter_delivery_count(self.attributes)

    def dead_letter_detail(self) -> str:
        """Why the job is being dead-lettered, as its error message says."""
        count = self.dead_letter_delivery_count
        return f"the queue gave up after {count if count is not None else '?'} delivery attempts"


def _body_job_id(data: bytes) -> object:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested absurdly deep
        return None
    return body.get("job_id") if isinstance(body, dict) else None


def _valid_job_id(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_JOB_ID_LENGTH else None
