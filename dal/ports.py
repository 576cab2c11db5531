"""Ports: what the service needs from storage, queues and limiters, as typing.Protocol.

Every port has an in-memory adapter that ships with the code and passes the same contract
tests as the real adapters (tests/unit/contracts, tests/integration/contracts).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from dal.records import (
    ApiKey,
    GeneratedImage,
    GenerationRequest,
    Job,
    JobChanges,
    JobError,
    JobStatus,
    Page,
    StepCallback,
    WebhookDelivery,
)


class JobStore(Protocol):
    def create(self, job: Job) -> Job:
        """Store a new job. Raises IdempotencyKeyReused when the job carries an idempotency key
        that its owner already used (the error holds the existing job)."""
        ...

    def create_within(
        self, job: Job, *, max_in_flight: int, images_per_day: int, day_start: datetime
    ) -> Job:
        """`create`, admitted by the owner's quotas in the same atomic step: the counts of
        count_in_flight and count_images_since(owner, day_start) and the insert happen as one,
        so concurrent admissions of one owner, from any number of processes, never pass a
        limit. 0 is unlimited. A duplicate id (ValueError) and a reused idempotency key
        (IdempotencyKeyReused) are refused first, as `create` refuses them: a replay creates
        nothing and is not charged. Then, as dal.quota_rules.check_admission says,
        DailyImageQuotaExceeded when the day's images plus the job's num_images would pass
        `images_per_day`, InFlightQuotaExceeded when `max_in_flight` jobs are in flight;
        nothing is recorded then."""
        ...

    def get(self, job_id: str) -> Job:
        """Raises JobNotFound."""
        ...

    def list_by_owner(self, owner: str, *, limit: int, cursor: str | None = None) -> Page:
        """The owner's jobs, newest first. `cursor` is the `next_cursor` of the previous page;
        raises InvalidCursor for anything else."""
        ...

    def list_by_status(self, status: JobStatus, *, limit: int) -> Sequence[Job]:
        """Oldest first; for sweepers and restarts, not for clients."""
        ...

    def transition(
        self,
        job_id: str,
        *,
        expected: Collection[JobStatus],
        target: JobStatus,
        changes: JobChanges | None = None,
    ) -> Job:
        """Atomically move the job to `target` if its status is in `expected`, applying
        `changes`; returns the new record. Exactly one of several concurrent callers wins.
        Raises JobNotFound, or TransitionConflict (with the current record) when the job is in
        another status. Raises ValueError for a transition the status machine forbids."""
        ...

    def claim(self, job_id: str, *, lease_s: float) -> Job:
        """Start an attempt: queued → running, or take over a running job whose lease has
        expired (its worker died). Sets the lease to now + lease_s, counts the attempt, sets
        started_at on the first one. Exactly one of several concurrent claimers wins. Raises
        JobNotFound, or TransitionConflict when the job is finished or running under a live
        lease."""
        ...

    def release(self, job_id: str, *, error: JobError) -> Job:
        """End a failed attempt that may be retried: running → queued, lease dropped, `error`
        kept as the last error. Raises JobNotFound or TransitionConflict."""
        ...

    def requeue_lapsed(self, job_id: str, *, error: JobError, at: datetime) -> Job:
        """Its worker died: running under a lease that has lapsed (by the store's clock) →
        queued, lease dropped, `error` kept as the last error, enqueued_at = `at`, one more
        handover (dal.requeue). Raises JobNotFound, or TransitionConflict when the job is not
        running or its lease is live."""
        ...

    def requeue_unclaimed(self, job_id: str, *, enqueued_before: datetime, at: datetime) -> Job:
        """Its message was lost: queued and handed to the queue at or before
        `enqueued_before`, never claimed → enqueued_at = `at`, one more handover; the caller
        publishes it again (dal.requeue). Raises JobNotFound, or TransitionConflict otherwise
        (claimed, ended, or handed over since)."""
        ...

    def reopen_dead_lettered(self, job_id: str) -> Job:
        """For a replay: a job failed with code dead_lettered goes back to queued (error,
        progress, finish time cleared; attempts kept). Raises JobNotFound, or
        TransitionConflict when the job is in any other state."""
        ...

    def record_progress(self, job_id: str, progress: float, *, lease_s: float | None = None) -> Job:
        """Set progress on a running job, renewing its lease to now + lease_s when given;
        returns the current record. If the job is no longer running, nothing is written and
        the record shows why (e.g. canceled)."""
        ...

    # ---- webhooks ----

    def record_webhook_delivery(self, job_id: str, delivery: WebhookDelivery) -> Job:
        """Append one webhook attempt to the job's deliveries, in any status, unless a
        delivery of the same event already succeeded (then nothing is written: one success
        per event). Returns the current record. Raises JobNotFound."""
        ...

    def list_owed_webhooks(
        self, *, since: datetime, max_attempts: int, limit: int
    ) -> Sequence[Job]:
        """Finished jobs created at or after `since` whose webhook is still owed
        (dal.webhooks.state.is_owed with `max_attempts`), oldest first, at most `limit`. For
        the webhook redrive after a restart."""
        ...

    def ping(self) -> None:
        """Raises StoreUnavailable when the store cannot be reached."""
        ...

    # ---- quotas ----

    def count_in_flight(self, owner: str) -> int:
        """How many of the owner's jobs are queued or running."""
        ...

    def count_images_since(self, owner: str, since: datetime) -> int:
        """The sum of num_images over the owner's jobs created at or after `since`, in any
        status except failed with code enqueue_failed (never handed to the workers)."""
        ...

    # ---- outbox ----

    def mark_enqueued(self, job_id: str, *, at: datetime) -> Job:
        """Record that the job's message was handed to the queue: set enqueued_at to `at`
        unless it is set already (the first mark wins). Changes nothing else, in any status;
        returns the current record. Raises JobNotFound."""
        ...

    def list_unenqueued(self, *, created_before: datetime, limit: int) -> Sequence[Job]:
        """Queued jobs whose enqueued_at is unset and created_at is before `created_before`,
        oldest first: their publish may have been lost. For the outbox sweeper."""
        ...


class ApiKeyStore(Protocol):
    def add(self, key: ApiKey) -> ApiKey: ...

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not."""
        ...

    def list_keys(self, owner: str | None = None) -> Sequence[ApiKey]: ...

    def revoke(self, key_id: str, *, at: datetime) -> ApiKey:
        """Raises NotFound. Revoking twice keeps the first revocation time."""
        ...


class KeyRevocations(Protocol):
    """How a key's revocation reaches every process that keeps verified keys in memory.

    A process may keep a key it verified only while `epoch()` stays what it was before the
    store read that verified it. A revocation anywhere changes every listening process's
    epoch before the revoking command returns (or within the channel's delivery time: see
    each adapter), so a revoked key is refused at once everywhere.
    """

    def announce(self) -> None:
        """A key was revoked: every process must drop the keys it verified. Raises
        StoreUnavailable when the channel is down."""
        ...

    def epoch(self) -> Hashable | None:
        """A value that changes whenever a revocation may have happened; None while this
        process cannot hear revocations (then nothing may be kept). Cheap: no network."""
        ...

    def listen(self) -> Callable[[], None]:
        """Start hearing other processes' revocations (a process that keeps verified keys
        calls it once); returns the function that stops listening."""
        ...


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    expires_at: datetime


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str) -> None: ...

    def get(self, key: str) -> bytes:
        """Raises BlobNotFound."""
        ...

    def delete(self, key: str) -> None:
        """Deleting a missing blob is not an error."""
        ...

    def exists(self, key: str) -> bool: ...

    def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        """A URL that grants GET on this one blob until it expires. It may be path-absolute
        ("/v1/blobs/...") when the API itself serves the blobs; clients resolve it against
        the API's base URL."""
        ...

    def ping(self) -> None: ...


class JobEvents(Protocol):
    """Tells every API process that a job has ended, so the requests waiting on it
    (`Prefer: wait`, the event stream) answer at once instead of at their next re-read of the
    job store. Best effort by design: waiters still re-read the store, so a lost event costs
    latency, never a wrong answer."""

    def publish_finished(self, job_id: str) -> None:
        """Raises StoreUnavailable when the bus is down."""
        ...

    def subscribe(self, on_finished: Callable[[str], None]) -> Callable[[], None]:
        """Call `on_finished(job_id)` for jobs ended from now on, from a background thread,
        until the returned function is called. Outages are survived (the subscription comes
        back by itself); events published meanwhile are lost."""
        ...


class JobQueue(Protocol):
    def enqueue(self, job: Job) -> None:
        """Hand the job to the workers. Raises StoreUnavailable when it cannot be handed over."""
        ...


@dataclass(frozen=True, slots=True)
class Ticket:
    """A recorded job joining the line for the GPUs."""

    job_id: str
    owner: str
    cost: float = 1.0  # what fair share counts: the job's images
    weight: float = 1.0  # its key's weight (txt2img-admin keys create --weight)


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A job the line let through: its caller publishes it to the queue."""

    job_id: str
    owner: str
    waited_s: float  # from joining the line to being handed over


@dataclass(frozen=True, slots=True)
class LinePlace:
    position: int  # jobs that will be handed over before it (0: it is next)
    ends_per_s: float | None  # how fast slots free up lately (dal.fair_share.ends_per_second)


@dataclass(frozen=True, slots=True)
class LineDepth:
    waiting: int
    handed_over: int
    ends_per_s: float | None


class FairLine(Protocol):
    """The line recorded jobs wait in for the GPUs, shared by every process of a deployment
    (the API instances, which admit jobs, and the workers, whose endings free slots). It counts
    the jobs handed over and not yet ended against a capacity, and lets waiting jobs through
    in weighted fair order between owners (dal.fair_share). The job store stays the record of
    every job; the line can be rebuilt from it (`restore`). Every method raises
    StoreUnavailable when the line's store is down."""

    def admit(self, ticket: Ticket, *, capacity: int) -> list[HandedOver]:
        """Tag the job and put it in line, then `take`. Admitting a job the line holds already
        (waiting or handed over) changes nothing but the take."""
        ...

    def take(self, *, capacity: int) -> list[HandedOver]:
        """Atomically hand over waiting jobs, in fair order, while fewer than `capacity` are
        handed over; the caller publishes each. Of concurrent callers each job goes to one."""
        ...

    def hand_over_now(self, job_id: str) -> None:
        """Count the job as handed over whatever the capacity (an operator's replay)."""
        ...

    def release(self, job_id: str) -> bool:
        """The job ended (or its record is gone): it leaves the line. True when it was handed
        over, so a slot is free. Idempotent: releasing an unknown job changes nothing."""
        ...

    def place(self, job_id: str) -> LinePlace | None:
        """Where a waiting job stands; None when it is not waiting (handed over, or unknown)."""
        ...

    def places(self, job_ids: Sequence[str]) -> dict[str, LinePlace]:
        """`place` for many jobs at once (a page of them), read together: the places of those
        of `job_ids` that are waiting, keyed by job id; the others are absent. One round trip
        to the line's store, none for no ids."""
        ...

    def handed_over_at(self, job_id: str) -> float | None:
        """When (epoch seconds) the job was handed over; None when it is not handed over."""
        ...

    def depth(self) -> LineDepth: ...

    def waiting_since(self) -> dict[str, float]:
        """For each owner with jobs waiting, when (epoch seconds) the oldest of them joined."""
        ...

    def handed_over_before(self, at: float, *, limit: int) -> list[str]:
        """Jobs handed over at or before `at` (epoch seconds), oldest first: the dispatcher's
        reconcile checks that each is still queued or running."""
        ...

    def needs_restore(self) -> bool:
        """True when the line has not been rebuilt from the job store since its own state was
        lost (a new process's memory, a Redis that restarted empty)."""
        ...

    def restore(self, waiting: Sequence[Ticket], handed_over: Sequence[str]) -> None:
        """Rebuild from the job store: `handed_over` jobs count against the capacity, `waiting`
        ones (in their arrival order) join the line; jobs the line already holds are left as
        they are. Afterwards needs_restore is False."""
        ...

    def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the bucket is full again / until the next request would be allowed.
    reset_after_s: float
    retry_after_s: float


class RateLimiter(Protocol):
    def hit(self, key: str, *, cost: int = 1) -> RateLimitDecision:
        """Count a request against `key`'s budget. Raises StoreUnavailable when the backing
        store is down (the caller decides whether to fail open)."""
        ...


class RequestCache(Protocol):
    """Short-lived shared memory for requests: idempotency keys and finished-job dedupe."""

    def get(self, key: str) -> str | None:
        """Raises StoreUnavailable when the cache is down."""
        ...

    def put_if_absent(self, key: str, value: str, *, ttl_s: int) -> str | None:
        """Store `value` unless `key` holds one already; returns the existing value, or None
        when this call stored it."""
        ...

    def put(self, key: str, value: str, *, ttl_s: int) -> None: ...

    def delete(self, key: str) -> None: ...

    def ping(self) -> None: ...


class ImageGenerator(Protocol):
    """What a job runner asks of an image generator, independent of torch.
    `gpu_worker.batching.BatchingGenerator` over the diffusion engine is the real one; tests
    may use any other generator that keeps the same promises."""

    @property
    def model_id(self) -> str: ...

    @property
    def default_size(self) -> tuple[int, int]:
        """(width, height) the model was trained for."""
        ...

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[GeneratedImage]:
        """Raises GenerationError; whatever `on_step` raises propagates."""
        ...

    def arriving(self) -> AbstractContextManager[None]:
        """Held by a runner from its claim until its generate() call: a batching generator
        lets the batch it is forming wait for the jobs on their way (and starts one with
        nobody on the way at once). Others return a context that does nothing."""
        ...

    def check_ready(self) -> None:
        """Raises GeneratorUnavailable, saying why, when generate() cannot work now (the
        pipeline process cannot start or keeps crashing); the worker's /readyz reports it."""
        ...

    def close(self) -> None:
        """Release the model (and its process); generate() must not be called afterwards."""
        ...
