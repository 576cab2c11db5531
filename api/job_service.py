"""Use cases behind the /v1/jobs routes. Knows nothing of HTTP; raises its own errors."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from api.quotas import QuotaLimits
from dal.dispatcher import UNLIMITED, Dispatcher
from dal.errors import (
    EnqueueFailed,
    IdempotencyConflict,
    IdempotencyKeyReused,
    JobAlreadyFinished,
    JobNotFound,
    QueueUnavailable,
    TransitionConflict,
)
from dal.failpoints import Failpoints
from dal.finisher import JobFinisher
from dal.memory import MemoryFairLine
from dal.ports import JobQueue, JobStore, RequestCache
from dal.quota_rules import start_of_utc_day
from dal.records import Job, JobParams, JobStatus, Page, utcnow
from dal.request_keys import finished_request_key, idempotency_cache_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationDefaults:
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated request, with None where the client left a field out."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    num_images: int = 1
    webhook_url: str | None = None  # checked against the profile's rule by the caller

    def fingerprint(self) -> str:
        canonical = json.dumps(
            {k: getattr(self, k) for k in self.__slots__}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    created: bool  # False: an earlier request made it (same Idempotency-Key, or deduplicated)
    deduplicated: bool = False  # an identical seeded request already succeeded: no new run


def new_job_id() -> str:
    return uuid.uuid4().hex


def random_seed() -> int:
    return secrets.randbelow(2**32)


class JobService:
    def __init__(
        self,
        *,
        jobs: JobStore,
        queue: JobQueue,
        cache: RequestCache,
        finisher: JobFinisher,
        model_id: str,
        defaults: GenerationDefaults,
        idempotency_ttl_s: int = 86_400,
        dedupe_seeded_requests: bool = True,
        clock: Callable[[], datetime] = utcnow,
        new_id: Callable[[], str] = new_job_id,
        new_seed: Callable[[], int] = random_seed,
        failpoints: Failpoints | None = None,
        enqueued_on_create: bool = False,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        """`enqueued_on_create`: the queue is rebuilt from the job store itself (the inline
        queue's process puts every queued job back in line when it starts), so a recorded job
        counts as enqueued at once and the outbox marker would be a wasted write.
        `dispatcher`: the fair dispatcher between the store and `queue`; by default one with
        no capacity limit, which hands every job over at once."""
        self._enqueued_on_create = enqueued_on_create
        self._jobs = jobs
        self._dispatcher = dispatcher or Dispatcher(
            jobs,
            queue,
            MemoryFairLine(),
            capacity=UNLIMITED,
            marks_hand_overs=not enqueued_on_create,
            clock=clock,
        )
        self._cache = cache
        self._finisher = finisher
        self._idempotency_ttl_s = idempotency_ttl_s
        self._dedupe = dedupe_seeded_requests
        self._model_id = model_id
        self._defaults = defaults
        self._clock = clock
        self._new_id = new_id
        self._new_seed = new_seed
        self._failpoints = failpoints or Failpoints()

    @property
    def model_id(self) -> str:
        """The model this service's jobs run on (MODEL_ID, else the model folder's name)."""
        return self._model_id

    def submit(
        self,
        *,
        owner: str,
        request: JobRequest,
        idempotency_key: str | None = None,
        quota: QuotaLimits | None = None,
        weight: float = 1.0,
    ) -> Submitted:
        """Record the job and put it in line for the GPUs (dal.dispatcher), with its key's
        `weight`. With room it is published and marked enqueued at once (the outbox marker: a
        queued job let through without it after OUTBOX_GRACE_S lost its publish and is swept);
        otherwise it waits for its turn. Raises QuotaExceeded, before anything is recorded,
        when `quota` forbids the job."""
        fingerprint = request.fingerprint()
        if idempotency_key is not None:
            replay = self._idempotent_replay(owner, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        now = self._clock()
        d = self._defaults
        job = Job(
            id=self._new_id(),
            owner=owner,
            model=self._model_id,
            params=JobParams(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=request.width or d.width,
                height=request.height or d.height,
                num_inference_steps=request.num_inference_steps or d.num_inference_steps,
                guidance_scale=(
                    d.guidance_scale if request.guidance_scale is None else request.guidance_scale
                ),
                seed=self._new_seed() if request.seed is None else request.seed,
                num_images=request.num_images,
            ),
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            webhook_url=request.webhook_url,
            enqueued_at=now if self._enqueued_on_create else None,
        )
        # A request with a webhook needs a job of its own to deliver it; no dedupe then.
        if self._dedupe and request.seed is not None and request.webhook_url is None:
            finished = self._finished_identical(job)
            if finished is not None:
                return Submitted(job=finished, created=False, deduplicated=True)
        try:
            self._create_within_quota(job, quota)
        except IdempotencyKeyReused as reused:
            if reused.existing.request_fingerprint != fingerprint:
                raise IdempotencyConflict(str(idempotency_key), reused.existing) from None
            return Submitted(job=reused.existing, created=False)
        if idempotency_key is not None:
            self._cache.put(
                idempotency_cache_key(owner, idempotency_key),
                job.id,
                ttl_s=self._idempotency_ttl_s,
            )

        self._failpoints.hit("after_job_recorded")
        try:
            admitted = self._dispatcher.admit(job, weight=weight)
        except QueueUnavailable as exc:
            # Never leave a job let through with no message behind it: fail it visibly.
            log.error("could not enqueue job %s: %s", job.id, exc)
            failed = self._mark_enqueue_failed(job)
            raise EnqueueFailed(failed) from exc
        return Submitted(job=admitted, created=True)

    def _create_within_quota(self, job: Job, quota: QuotaLimits | None) -> None:
        if quota is None or quota.unlimited:
            self._jobs.create(job)
            return
        # The store counts and inserts in one atomic step per owner, so the limit holds
        # across API processes, not only within this one.
        self._jobs.create_within(
            job,
            max_in_flight=quota.max_in_flight,
            images_per_day=quota.images_per_day,
            day_start=start_of_utc_day(job.created_at),
        )

    def _idempotent_replay(self, owner: str, key: str, fingerprint: str) -> Submitted | None:
        """Fast path through the cache; the job store's unique key remains the guarantee."""
        existing = self._cached_job(idempotency_cache_key(owner, key), owner)
        if existing is None:
            return None
        if existing.request_fingerprint != fingerprint:
            raise IdempotencyConflict(key, existing)
        return Submitted(job=existing, created=False)

    def _cached_job(self, cache_key: str, owner: str) -> Job | None:
        """The owner's job the request cache names under `cache_key`, if it still exists."""
        job_id = self._cache.get(cache_key)
        if job_id is None:
            return None
        try:
            existing = self._jobs.get(job_id)
        except JobNotFound:
            return None
        return existing if existing.owner == owner else None

    def _finished_identical(self, job: Job) -> Job | None:
        """A succeeded job of this owner with exactly these parameters, seed and model."""
        existing = self._cached_job(
            finished_request_key(job.owner, job.model, job.params), job.owner
        )
        if (
            existing is None
            or existing.status != JobStatus.SUCCEEDED
            or existing.params != job.params
            or existing.model != job.model
        ):
            return None
        return existing

    def get(self, *, owner: str, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job.owner != owner:
            # Indistinguishable from a job that does not exist.
            raise JobNotFound(job_id)
        return job

    def list(self, *, owner: str, limit: int, cursor: str | None) -> Page:
        return self._jobs.list_by_owner(owner, limit=limit, cursor=cursor)

    def cancel(self, *, owner: str, job_id: str) -> Job:
        job = self.get(owner=owner, job_id=job_id)
        if job.status.is_terminal:
            raise JobAlreadyFinished(job)
        try:
            return self._finisher.cancel(job_id)
        except TransitionConflict as conflict:
            raise JobAlreadyFinished(conflict.job) from None

    def _mark_enqueue_failed(self, job: Job) -> Job:
        try:
            return self._finisher.fail_unqueued(job.id, "the job could not be queued; submit again")
        except Exception:
            log.exception("could not mark job %s failed after an enqueue failure", job.id)
            return job
