"""Domain records: a job, its parameters, its images, and the status machine.

Records are immutable; stores hand out copies, and a change is a new record written through a
store's conditional operations.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

# queued → running → succeeded | failed | canceled. A queued job may also be canceled by its
# owner or failed by the system (it could not be published, or its message was dead-lettered);
# a running job whose attempt failed transiently goes back to queued for the retry. A finished
# job never changes, with one operator exception outside this table: a dead-lettered job can be
# reopened for replay (JobStore.reopen_dead_lettered).
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def legal_sources(expected: Collection[JobStatus], target: JobStatus) -> frozenset[JobStatus]:
    """`expected` as a set, once every move from it to `target` is one the status machine
    allows; raises ValueError naming the first that is not. Every store's `transition` asks
    this before it writes, so the rule lives here and the stores only make the write
    conditional on the current status."""
    sources = frozenset(expected)
    for status in sorted(sources):
        if not can_transition(status, target):
            raise ValueError(f"{status.value} → {target.value} is not a valid transition")
    return sources


@dataclass(frozen=True, slots=True)
class JobParams:
    """Everything that determines a job's pixels. `seed` is always set: the API picks one when
    the client does not, so every job can be reproduced."""

    prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int = 1
    negative_prompt: str | None = None

    def image_seeds(self) -> tuple[int, ...]:
        return tuple((self.seed + i) % 2**32 for i in range(self.num_images))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            "num_images": self.num_images,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobParams:
        return cls(
            prompt=data["prompt"],
            negative_prompt=data.get("negative_prompt"),
            width=int(data["width"]),
            height=int(data["height"]),
            num_inference_steps=int(data["num_inference_steps"]),
            guidance_scale=float(data["guidance_scale"]),
            seed=int(data["seed"]),
            num_images=int(data.get("num_images", 1)),
        )


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where one generated image lives in the blob store (never a URL: URLs are signed on read)."""

    key: str
    width: int
    height: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "width": self.width, "height": self.height, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRef:
        return cls(
            key=data["key"],
            width=int(data["width"]),
            height=int(data["height"]),
            seed=int(data["seed"]),
        )


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        return cls(code=str(data["code"]), message=str(data["message"]))


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One attempt to POST a job's outcome to its webhook_url, as recorded on the job."""

    attempt: int
    event: str
    attempted_at: datetime
    status_code: int | None = None  # None: no HTTP answer (refused, timed out)
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "event": self.event,
            "attempted_at": self.attempted_at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebhookDelivery:
        status_code = data.get("status_code")
        return cls(
            attempt=int(data["attempt"]),
            event=str(data["event"]),
            attempted_at=datetime.fromisoformat(str(data["attempted_at"])),
            status_code=None if status_code is None else int(status_code),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    owner: str
    params: JobParams
    model: str
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    attempts: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    images: tuple[ImageRef, ...] = ()
    # While running: the claim holds until then; a worker renews it as it makes progress. A
    # redelivered message may take over a running job whose lease has expired (its worker died).
    lease_expires_at: datetime | None = None
    idempotency_key: str | None = None
    # Hash of the request as the client sent it, to tell a retry from a conflicting reuse of
    # the same Idempotency-Key.
    request_fingerprint: str | None = None
    # Outbox marker: when the job's message was handed to the queue. A queued job without it
    # after a grace period lost its publish (the API died in between) and is swept.
    enqueued_at: datetime | None = None
    # Times the sweeper handed the job to the queue again: its message was lost (queued, never
    # claimed) or its worker died (running under a lapsed lease).
    handovers: int = 0
    webhook_url: str | None = None
    webhook_deliveries: tuple[WebhookDelivery, ...] = ()

    def with_changes(self, **changes: Any) -> Job:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class JobChanges:
    """The fields a transition may set besides the status. None means "leave as is"."""

    progress: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    images: tuple[ImageRef, ...] | None = None
    increment_attempts: bool = False
    clear_error: bool = False

    def apply(self, job: Job, status: JobStatus, now: datetime) -> Job:
        error = None if self.clear_error else job.error
        return replace(
            job,
            status=status,
            updated_at=now,
            progress=job.progress if self.progress is None else self.progress,
            started_at=job.started_at if self.started_at is None else self.started_at,
            finished_at=job.finished_at if self.finished_at is None else self.finished_at,
            error=error if self.error is None else self.error,
            images=job.images if self.images is None else self.images,
            attempts=job.attempts + (1 if self.increment_attempts else 0),
            # A lease only means something while running.
            lease_expires_at=job.lease_expires_at if status == JobStatus.RUNNING else None,
        )


DEAD_LETTERED = "dead_lettered"
# The job was recorded but never handed to the queue (publish failed, or the outbox sweeper
# gave up on it). Such a job does not count against the owner's daily image quota.
ENQUEUE_FAILED = "enqueue_failed"


def is_dead_lettered(job: Job) -> bool:
    return (
        job.status == JobStatus.FAILED and job.error is not None and job.error.code == DEAD_LETTERED
    )


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Job, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """Where a queued job stands in line for the GPUs (dal.dispatcher). Estimates: the order
    changes as other owners submit, and the start is projected from recent throughput."""

    position: int  # jobs to be handed to the GPUs before it; 0 once it is handed over
    estimated_start_at: datetime | None  # None while no throughput has been measured


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: only a keyed hash of the secret, never the secret itself."""

    id: str
    owner: str
    key_hash: str
    label: str = ""
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None
    # Per-key quota overrides; None takes the service's default (QUOTA_*), 0 is unlimited.
    max_in_flight: int | None = None
    images_per_day: int | None = None
    # The key's share of the GPUs against other keys' jobs waiting at the same time (>= 1): a
    # key of weight 2 gets twice the hand-overs of a key of weight 1.
    weight: int = 1

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# ---- image generation: what a job runner asks of a generator (dal.ports.ImageGenerator) ----

# Called after each denoising step with (steps_done, steps_total). It may raise to stop the
# generation (the runner raises JobCanceled this way); the exception propagates out of generate().
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    # One seed per image: image i is generated from seeds[i] alone, so a job's images do not
    # depend on how many images were asked for or what else shared the batch.
    seeds: tuple[int, ...]

    @property
    def batch_shape(self) -> tuple[int, int, int, float]:
        """What requests must share to run in one pipeline call (prompts and seeds may
        differ)."""
        return (self.width, self.height, self.num_inference_steps, self.guidance_scale)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int
    seed: int
