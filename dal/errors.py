"""Every exception the service raises on purpose, in one tree. Adapters translate vendor errors
into these; the API maps them to HTTP in one place (api/problems.py), the workers to an
acknowledgement or a retry.

    ServiceError
    ├── DalError                      what a store, queue or cache adapter says
    │   ├── NotFound
    │   │   ├── JobNotFound
    │   │   ├── BlobNotFound
    │   │   └── ApiKeyNotFound
    │   ├── TransitionConflict        a conditional change found the job in another status
    │   ├── IdempotencyKeyReused      a job with this owner + Idempotency-Key already exists
    │   ├── InvalidCursor             a paging cursor that this store did not issue
    │   └── Unavailable               the backing service cannot be reached now (retry later)
    │       ├── StoreUnavailable      a database, bucket or cache
    │       └── QueueUnavailable      the broker did not take the message
    ├── SubmissionRefused             a job refused before anything was recorded
    │   ├── IdempotencyConflict       the key was used with another request body
    │   ├── QuotaExceeded             (messages: dal.quota_rules)
    │   │   ├── InFlightQuotaExceeded
    │   │   └── DailyImageQuotaExceeded
    │   └── InvalidWebhookUrl         malformed, or somewhere the service must not POST to
    ├── JobAlreadyFinished            cancel of a job that has ended
    ├── JobCanceled                   raised from a step callback to stop a canceled job
    ├── EnqueueFailed                 the job was recorded but not queued; it has been failed
    ├── SignatureInvalid
    │   ├── BlobUrlSignatureInvalid   a blob URL we did not sign, altered or expired
    │   └── WebhookSignatureInvalid   a webhook delivery that does not verify
    ├── SendFailed                    a webhook POST got no HTTP answer
    ├── PushUnauthorized              a push request not from our subscription
    ├── MalformedMessage              a queue message or push body we cannot read
    ├── GenerationError               the pipeline failed (code, retryable)
    ├── GeneratorUnavailable          the pipeline cannot take work now (readiness)
    ├── FailpointTriggered            a fault injected on purpose (FAILPOINTS)
    └── ConfigurationError            the settings cannot work (raised at start)
        ├── SchemaNotManaged          tables no migration made, in an unknown shape
        ├── UnsupportedAdapter
        ├── ModelNotFound
        ├── PipelineNotInstalled
        └── SigningNotConfigured

InvalidWebhookUrl and MalformedMessage are also ValueErrors, ConfigurationError and
FailpointTriggered RuntimeErrors, so callers that validate generically keep working. The HTTP
edge's own `api.problems.ProblemError` is not a domain error: it is how a route answers with a
problem document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dal.records import Job, JobStatus


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""


# ---- the DAL ------------------------------------------------------------------------------


class DalError(ServiceError):
    """Base of every error a DAL adapter raises on purpose."""


class NotFound(DalError):
    pass


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class BlobNotFound(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__(f"blob {key!r} does not exist")
        self.key = key


class ApiKeyNotFound(NotFound):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} does not exist")
        self.key_id = key_id


class TransitionConflict(DalError):
    """The job was not in one of the expected statuses, so nothing changed."""

    def __init__(self, job: Job, expected: frozenset[JobStatus]) -> None:
        wanted = ", ".join(sorted(s.value for s in expected))
        super().__init__(f"job {job.id!r} is {job.status.value}, expected one of: {wanted}")
        self.job = job
        self.expected = expected


class IdempotencyKeyReused(DalError):
    def __init__(self, existing: Job) -> None:
        super().__init__(f"idempotency key already used by job {existing.id!r}")
        self.existing = existing


class InvalidCursor(DalError):
    pass


class Unavailable(DalError):
    """Transient: a backing service did not answer. Safe to retry."""


class StoreUnavailable(Unavailable):
    """The database, bucket, cache or event bus did not answer."""


class QueueUnavailable(Unavailable):
    """The queue's broker (Pub/Sub, Redis for Celery) did not take the message."""


# ---- submissions and jobs -----------------------------------------------------------------


class SubmissionRefused(ServiceError):
    """A submission refused before anything was recorded."""


class IdempotencyConflict(SubmissionRefused):
    def __init__(self, key: str, existing: Job) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body "
            f"(job {existing.id})"
        )
        self.key = key
        self.existing = existing


class QuotaExceeded(SubmissionRefused):
    """A submission refused by a quota; nothing was recorded. `code` names which quota."""

    code: str = "quota-exceeded"

    def __init__(self, message: str, *, limit: int, usage: int, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.usage = usage
        self.retry_after_s = retry_after_s


class InFlightQuotaExceeded(QuotaExceeded):
    code = "quota-in-flight-exceeded"


class DailyImageQuotaExceeded(QuotaExceeded):
    code = "quota-images-per-day-exceeded"

    def __init__(
        self, message: str, *, limit: int, usage: int, requested: int, retry_after_s: int
    ) -> None:
        super().__init__(message, limit=limit, usage=usage, retry_after_s=retry_after_s)
        self.requested = requested


class InvalidWebhookUrl(SubmissionRefused, ValueError):
    """The URL is malformed or points somewhere the service must not POST to."""


class JobAlreadyFinished(ServiceError):
    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} is already {job.status.value}")
        self.job = job


class JobCanceled(ServiceError):
    """Raised from a generation's step callback: the job left `running` meanwhile (its owner
    canceled it), so the pipeline stops at this step."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was canceled")
        self.job_id = job_id


class EnqueueFailed(ServiceError):
    """The job was recorded but could not be handed to the workers; it has been marked failed."""

    def __init__(self, job: Job) -> None:
        super().__init__("the job queue is unavailable; try again shortly")
        self.job = job


# ---- signatures and messages --------------------------------------------------------------


class SignatureInvalid(ServiceError):
    pass


class BlobUrlSignatureInvalid(SignatureInvalid):
    """The URL was not signed by us, was altered, or has expired."""


class WebhookSignatureInvalid(SignatureInvalid):
    """The delivery was not signed with this secret, was altered, or is too old."""


class SendFailed(ServiceError):
    """A webhook POST got no HTTP answer: refused, reset, timed out, TLS failure."""


class PushUnauthorized(ServiceError):
    """The push request does not carry our push subscription's token."""


class MalformedMessage(ServiceError, ValueError):
    """A queue message or push body that cannot be read; retrying cannot help."""


# ---- generation ---------------------------------------------------------------------------


class GenerationError(ServiceError):
    """A generation failed. `code` is machine-readable; `retryable` says whether trying again
    later (another instance, more memory free) could succeed."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class GeneratorUnavailable(ServiceError):
    """The generator cannot take work now (see ImageGenerator.check_ready); `reason` is safe
    to show on /readyz."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- configuration ------------------------------------------------------------------------


class ConfigurationError(ServiceError, RuntimeError):
    """The settings cannot work; raised while a process starts."""


class SchemaNotManaged(ConfigurationError):
    """The database holds tables of this schema that no migration made, in a shape that does
    not match the first revision: it cannot be adopted safely."""


class FailpointTriggered(ServiceError, RuntimeError):
    """A fault injected on purpose (FAILPOINTS), for drills and tests."""

    def __init__(self, name: str) -> None:
        super().__init__(f"failpoint {name} triggered")
        self.name = name


class UnsupportedAdapter(ConfigurationError):
    def __init__(self, variable: str, value: str, supported: str) -> None:
        super().__init__(f"{variable}={value} has no adapter (supported: {supported})")


class ModelNotFound(ConfigurationError):
    pass


class PipelineNotInstalled(ConfigurationError):
    """This environment lacks the packages that run the pipeline (the `worker` extra)."""


class SigningNotConfigured(ConfigurationError):
    """URLs cannot be signed with the credentials at hand (e.g. user credentials with no
    service account): a deployment error, not a transient one."""
