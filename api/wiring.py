"""The API process's composition root: the shared core (dal.core) plus what serving needs.

Nothing connects at import; `build_services` is called from the app's lifespan (and by tests,
which may pass their own generator so that many apps share one loaded model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from starlette.concurrency import run_in_threadpool

from api.api_keys import ApiKeyService
from api.call_lane import CallLane
from api.job_recovery import JobRecovery, build_recovery
from api.job_service import GenerationDefaults, JobService
from api.job_waits import JobWaits
from api.outbox_sweeper import OutboxSweeper
from api.quotas import QuotaLimits
from dal.core import Core, OnCore, build_core
from dal.dispatcher import Dispatcher
from dal.errors import UnsupportedAdapter
from dal.factory import build_broker_queue, build_rate_limiter
from dal.fail_open import FailOpenRateLimiter
from dal.failpoints import Failpoints
from dal.inline import InlineJobQueue
from dal.job_view import JobOut, render_job
from dal.memory import MemoryFairLine, MemoryJobQueue
from dal.ports import ImageGenerator, JobQueue, RateLimiter
from dal.records import Job, JobStatus, QueuePlace
from dal.settings import Settings
from dal.telemetry import JOBS_BY_STATUS
from dal.url_signing import HmacUrlSigner
from dal.webhooks.factory import url_policy
from dal.webhooks.urls import WebhookUrlPolicy
from gpu_worker.model_folder import read_default_size
from gpu_worker.runner import RunOutcome
from gpu_worker.wiring import build_engine, build_runner, recover_interrupted_jobs

__all__ = ["Services", "build_services"]

log = logging.getLogger(__name__)

FALLBACK_IMAGE_SIZE = 512


@dataclass
class Services(OnCore):
    core: Core
    keys: ApiKeyService
    queue: JobQueue
    # Hands recorded jobs to `queue` in fair order within the fleet's capacity.
    dispatcher: Dispatcher
    job_service: JobService
    submit_limiter: RateLimiter
    read_limiter: RateLimiter
    outbox: OutboxSweeper
    # Hands over again jobs whose message was lost or whose worker died; None with the inline
    # queue, whose process re-runs its queued jobs and fails its running ones when it starts.
    recovery: JobRecovery | None
    webhook_urls: WebhookUrlPolicy
    # The model, where this process runs jobs (the inline queue); None where workers do.
    generator: ImageGenerator | None = None
    job_waits: JobWaits = field(default_factory=JobWaits)
    # Where submits record and queue their jobs, and where one job is read and rendered: the
    # event loop when that stays in process, else the threadpool.
    submit_lane: CallLane = field(default_factory=lambda: CallLane(on_loop=False))
    read_lane: CallLane = field(default_factory=lambda: CallLane(on_loop=False))
    readiness_checks: dict[str, Callable[[], None]] = field(default_factory=dict)

    @property
    def url_signer(self) -> HmacUrlSigner | None:
        """Set when the API serves blobs itself (filesystem, memory): verifies their URLs."""
        if self.settings.blob_urls_signed_in_process:
            return self.core.url_signer
        return None

    @property
    def rate_limits_block(self) -> bool:
        """Whether a rate-limit check may wait on the network (Redis), as opposed to
        counting in this process's memory."""
        return self.settings.rate_limiter != "memory"

    @property
    def default_quota(self) -> QuotaLimits:
        return QuotaLimits(
            max_in_flight=self.settings.quota_max_in_flight,
            images_per_day=self.settings.quota_images_per_day,
        )

    def view(self, job: Job, base_url: str) -> JobOut:
        """The job as its owner sees it, image URLs signed and absolute against `base_url`,
        with its place in line while it is queued."""
        return self._render(job, base_url, self.dispatcher.place(job))

    async def view_soon(self, job: Job, base_url: str) -> JobOut:
        """`view` from the event loop: on the loop itself when nothing it needs may block
        (image URLs this process signs itself: HMAC, no I/O; a place in a line held in this
        process's memory), else on the threadpool (a place in the Redis line, GCS signing
        through IAM)."""
        in_memory_line = isinstance(self.core.line, MemoryFairLine)
        if self.url_signer is not None and (job.status != JobStatus.QUEUED or in_memory_line):
            return self.view(job, base_url)
        return await run_in_threadpool(self.view, job, base_url)

    def views(self, jobs: Sequence[Job], base_url: str) -> list[JobOut]:
        """`view` for a page of jobs, with one read of the line for all their places."""
        places = self.dispatcher.places(jobs)
        return [self._render(job, base_url, places.get(job.id)) for job in jobs]

    def _render(self, job: Job, base_url: str, place: QueuePlace | None) -> JobOut:
        return render_job(
            job,
            blobs=self.core.blobs,
            url_ttl=timedelta(seconds=self.settings.signed_url_ttl_s),
            base_url=base_url,
            place=place,
        )


def build_services(settings: Settings, *, generator: ImageGenerator | None = None) -> Services:
    """The API process's composition root. With JOB_QUEUE=inline (the embedded profile) it
    also builds the worker's half in this process: the model and the runner behind an
    in-process queue."""
    core = build_core(settings)
    try:
        return _build_services(core, generator)
    except BaseException:
        core.close()
        raise


def _build_services(core: Core, generator: ImageGenerator | None) -> Services:
    settings = core.settings
    keys = ApiKeyService(
        core.api_keys,
        pepper=settings.api_key_pepper.get_secret_value(),
        revocations=core.key_revocations,
        keep_verified_s=settings.key_cache_ttl_s,
    )
    core.closers.append(keys.listen_for_revocations())
    if settings.bootstrap_api_key is not None:
        keys.ensure(
            owner=settings.bootstrap_api_key_owner,
            secret=settings.bootstrap_api_key.get_secret_value(),
        )

    job_waits = JobWaits()
    if core.job_events is not None:
        # Every ending, this process's own included (the bus hears its own publish), wakes
        # the waiters once through the bus.
        core.closers.append(core.job_events.subscribe(job_waits.notify))
    else:
        # No bus (JOB_EVENTS=none): jobs end in this process alone (the inline queue).
        core.finisher.add_handler("local waiters", lambda job: job_waits.notify(job.id, job))

    queue: JobQueue
    if settings.job_queue == "inline":
        if generator is None:
            generator = build_engine(settings)
            # Closed after the queue (closers run newest first), so its last job can finish.
            core.closers.append(generator.close)
        queue = _start_inline_queue(core, generator)
    elif settings.job_queue == "memory":
        queue = MemoryJobQueue()
    elif settings.job_queue in ("pubsub", "celery"):
        queue = build_broker_queue(settings, core.closers)
    else:
        raise UnsupportedAdapter(
            "JOB_QUEUE", str(settings.job_queue), "inline, memory, pubsub, celery"
        )

    dispatcher = core.build_dispatcher(queue, marks_hand_overs=settings.job_queue != "inline")
    if settings.job_queue == "inline":
        # The line lives in this process: rebuilt from the store, it hands the jobs queued
        # before a restart to the new inline queue.
        dispatcher.reconcile()
    job_service = JobService(
        jobs=core.jobs,
        queue=queue,
        dispatcher=dispatcher,
        cache=core.cache,
        finisher=core.finisher,
        model_id=_model_id(settings, generator),
        defaults=_generation_defaults(settings, generator),
        idempotency_ttl_s=settings.idempotency_ttl_s,
        dedupe_seeded_requests=settings.dedupe_seeded_requests,
        failpoints=Failpoints.from_spec(settings.failpoints),
        enqueued_on_create=settings.job_queue == "inline",
    )
    checks: dict[str, Callable[[], None]] = {
        "job_store": core.jobs.ping,
        "blob_store": core.blobs.ping,
    }
    if generator is not None and settings.job_queue == "inline":
        checks["model"] = generator.check_ready
    # /metrics counts queued and running jobs in this store (capped, cached: see collectors).
    JOBS_BY_STATUS.track(core.jobs)
    core.closers.append(lambda: JOBS_BY_STATUS.untrack(core.jobs))
    return Services(
        core=core,
        keys=keys,
        queue=queue,
        dispatcher=dispatcher,
        job_service=job_service,
        submit_limiter=_rate_limiter(core, "submit"),
        read_limiter=_rate_limiter(core, "read"),
        outbox=OutboxSweeper(
            core.jobs,
            queue,
            core.finisher,
            grace_s=settings.outbox_grace_s,
            give_up_s=settings.outbox_give_up_s,
            dispatcher=dispatcher,
        ),
        recovery=build_recovery(core, queue) if settings.job_queue != "inline" else None,
        webhook_urls=url_policy(settings),
        generator=generator,
        job_waits=job_waits,
        submit_lane=CallLane(on_loop=settings.submits_stay_in_process),
        read_lane=CallLane(on_loop=settings.job_reads_stay_in_process),
        readiness_checks=checks,
    )


def _rate_limiter(core: Core, scope: Literal["submit", "read"]) -> RateLimiter:
    settings = core.settings
    per_minute, burst = (
        (settings.rate_limit_submit_per_minute, settings.rate_limit_submit_burst)
        if scope == "submit"
        else (settings.rate_limit_read_per_minute, settings.rate_limit_read_burst)
    )
    limiter = build_rate_limiter(
        settings,
        limit=per_minute,
        period_s=60,
        burst=burst,
        scope=scope,
        redis_client=core.redis,
    )
    return FailOpenRateLimiter(limiter, limit=burst)


def _start_inline_queue(core: Core, generator: ImageGenerator) -> JobQueue:
    settings = core.settings
    runner = build_runner(settings, core=core, generator=generator)

    def run_job(job_id: str) -> RunOutcome:
        return runner.run(job_id)

    queue = InlineJobQueue(run_job, workers=settings.inline_workers)
    # Queued jobs go back in line once the dispatcher is built (its restore).
    recover_interrupted_jobs(core.jobs, core.finisher)
    queue.start()
    core.closers.append(lambda: queue.close(timeout=settings.shutdown_grace_s))
    return queue


def _model_id(settings: Settings, generator: ImageGenerator | None) -> str:
    if settings.model_id:
        return settings.model_id
    if generator is not None:
        return generator.model_id
    return settings.resolved_model_path.name


def _generation_defaults(
    settings: Settings, generator: ImageGenerator | None
) -> GenerationDefaults:
    if settings.default_image_size is not None:
        width = height = settings.default_image_size
    elif generator is not None:
        width, height = generator.default_size
    else:
        width, height = read_default_size(settings.resolved_model_path) or (
            FALLBACK_IMAGE_SIZE,
            FALLBACK_IMAGE_SIZE,
        )
    return GenerationDefaults(
        width=width,
        height=height,
        num_inference_steps=settings.default_steps,
        guidance_scale=settings.default_guidance_scale,
    )
