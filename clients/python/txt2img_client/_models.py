"""What the API answers, as typed, immutable records.

Each record is read from the JSON document the API sent (`from_dict`) and keeps that document
as `raw`, so a field the service adds later is never lost to a caller that needs it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """The job has ended and will not change any more."""
        return self in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _items(value: Any) -> Sequence[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON array, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class JobParams:
    """The job's parameters as the service resolved them (defaults filled in)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobParams:
        return cls(
            prompt=str(data["prompt"]),
            negative_prompt=data.get("negative_prompt"),
            width=int(data["width"]),
            height=int(data["height"]),
            num_inference_steps=int(data["num_inference_steps"]),
            guidance_scale=float(data["guidance_scale"]),
            seed=int(data["seed"]),
            num_images=int(data["num_images"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """One generated image. `url` is signed: fetch it without the API key before `expires_at`
    (`Client.download`); read the job again for a fresh one."""

    url: str
    expires_at: datetime
    width: int
    height: int
    seed: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Image:
        return cls(
            url=str(data["url"]),
            expires_at=_time(data["expires_at"]),
            width=int(data["width"]),
            height=int(data["height"]),
            seed=int(data["seed"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """Why a job failed (`code` is stable, `message` is for people)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    attempt: int
    event: str
    attempted_at: datetime
    status_code: int | None
    error: str | None
    succeeded: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    url: str
    deliveries: tuple[WebhookDelivery, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Webhook:
        deliveries = tuple(
            WebhookDelivery(
                attempt=int(d["attempt"]),
                event=str(d["event"]),
                attempted_at=_time(d["attempted_at"]),
                status_code=None if d.get("status_code") is None else int(d["status_code"]),
                error=d.get("error"),
                succeeded=bool(d["succeeded"]),
            )
            for d in _items(data.get("deliveries", []))
        )
        return cls(url=str(data["url"]), deliveries=deliveries)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as `GET /v1/jobs/{id}` shows it. While it is queued, `queue_position` is how many
    jobs will be handed to the GPUs before it (0: it is next, or handed over already) and
    `estimated_start_at` when that should happen: estimates, None once it runs or ends (and
    from a service that does not tell)."""

    id: str
    status: JobStatus
    progress: float
    model: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    error: JobError | None
    params: JobParams
    images: tuple[Image, ...]
    webhook: Webhook | None
    queue_position: int | None = None
    estimated_start_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        error = data.get("error")
        webhook = data.get("webhook")
        return cls(
            id=str(data["id"]),
            status=JobStatus(data["status"]),
            progress=float(data["progress"]),
            model=str(data.get("model", "")),
            created_at=_time(data["created_at"]),
            updated_at=_time(data["updated_at"]),
            started_at=_optional_time(data.get("started_at")),
            finished_at=_optional_time(data.get("finished_at")),
            attempts=int(data.get("attempts", 0)),
            error=None
            if error is None
            else JobError(code=str(error["code"]), message=str(error["message"])),
            params=JobParams.from_dict(data["params"]),
            images=tuple(Image.from_dict(i) for i in _items(data.get("images", []))),
            webhook=None if webhook is None else Webhook.from_dict(webhook),
            queue_position=_optional_int(data.get("queue_position")),
            estimated_start_at=_optional_time(data.get("estimated_start_at")),
            raw=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPage:
    """One page of `GET /v1/jobs`, newest first; `next_cursor` is None on the last page."""

    items: tuple[Job, ...]
    next_cursor: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobPage:
        cursor = data.get("next_cursor")
        return cls(
            items=tuple(Job.from_dict(item) for item in _items(data["items"])),
            next_cursor=None if cursor is None else str(cursor),
            raw=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    """`event: progress` of `GET /v1/jobs/{id}/events`: the job is queued or running."""

    event_id: str
    job_id: str
    status: JobStatus
    progress: float
    updated_at: datetime

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, event_id: str) -> ProgressEvent:
        return cls(
            event_id=event_id,
            job_id=str(data["id"]),
            status=JobStatus(data["status"]),
            progress=float(data["progress"]),
            updated_at=_time(data["updated_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEvent:
    """`event: queue`: the job waits its turn for the GPUs; sent when a stream starts on a
    queued job and whenever its place changes. Both fields are as in the `Job` (estimates).
    `Client.events` yields these only with `queue=True`."""

    event_id: str
    job_id: str
    queue_position: int
    estimated_start_at: datetime | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, event_id: str) -> QueueEvent:
        return cls(
            event_id=event_id,
            job_id=str(data["id"]),
            queue_position=int(data["queue_position"]),
            estimated_start_at=_optional_time(data.get("estimated_start_at")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    """`event: status`: the job has ended; the last event of the stream."""

    event_id: str
    job: Job


JobEvent = ProgressEvent | StatusEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldError:
    """One field at fault in a `validation-error`: `body.width`, `query.limit`, ..."""

    field: str
    message: str


# The members RFC 9457 defines, and the API's own `code` and `errors`; the rest are extensions.
_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code", "errors"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """An RFC 9457 problem document: what every error answer of the API carries. `code` is
    stable (branch on it); `extensions` holds the rest, e.g. `limit` and `usage` of a quota.
    An answer that was not problem+json (a proxy's page) gives `code` None."""

    status: int
    code: str | None
    title: str
    detail: str | None = None
    type: str = "about:blank"
    instance: str | None = None
    errors: tuple[FieldError, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def extensions(self) -> Mapping[str, Any]:
        return {k: v for k, v in self.raw.items() if k not in _PROBLEM_MEMBERS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, status: int, reason: str) -> Problem:
        errors = data.get("errors") or []
        code = data.get("code")
        detail = data.get("detail")
        instance = data.get("instance")
        return cls(
            status=status,  # the answer's own status is authoritative (RFC 9457 §3.1.2)
            code=None if code is None else str(code),
            title=str(data.get("title") or reason),
            detail=None if detail is None else str(detail),
            type=str(data.get("type", "about:blank")),
            instance=None if instance is None else str(instance),
            errors=tuple(
                FieldError(field=str(e["field"]), message=str(e["message"])) for e in _items(errors)
            ),
            raw=data,
        )
