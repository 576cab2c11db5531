"""The API process's one wiring function: settings in, adapters and services out.

Nothing connects at import; `build_services` is called from the app's lifespan (and by tests,
which may pass their own generator so that many apps share one loaded model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from api.api_keys import ApiKeyService
from api.job_service import GenerationDefaults, JobService
from api.job_waits import JobWaits
from api.outbox_sweeper import OutboxSweeper
from api.quotas import QuotaLimits
from api.webhooks import build_webhooks
from dal.errors import UnsupportedAdapter
from dal.factory import (
    build_blob_store,
    build_broker_queue,
    build_job_events,
    build_rate_limiter,
    build_redis_client,
    build_request_cache,
    build_stores,
    build_url_signer,
    close_all,
)
from dal.fail_open import FailOpenJobEvents, FailOpenRateLimiter, FailOpenRequestCache
from dal.failpoints import Failpoints
from dal.ports import BlobStore, ImageGenerator, JobQueue, JobStore, RateLimiter, RequestCache
from dal.settings import Settings
from dal.telemetry import JOBS_BY_STATUS
from dal.url_signing import HmacUrlSigner
from dal.webhooks.dispatcher import WebhookDispatcher
from gpu_worker.model_folder import read_default_size

__all__ = ["Services", "UnsupportedAdapter", "build_services", "build_stores"]

log = logging.getLogger(__name__)

FALLBACK_IMAGE_SIZE = 512


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    keys: ApiKeyService
    blobs: BlobStore
    # Set when the API serves blobs itself (filesystem, memory): verifies their signed URLs.
    url_signer: HmacUrlSigner | None
    queue: JobQueue
    cache: RequestCache
    job_service: JobService
    # Delivers webhooks of jobs ended here (owner cancels; everything with the inline queue).
    webhooks: WebhookDispatcher
    submit_limiter: RateLimiter
    read_limiter: RateLimiter
    outbox: OutboxSweeper
    generator: ImageGenerator | None = None
    job_waits: JobWaits = field(default_factory=JobWaits)
    job_events: FailOpenJobEvents | None = None
    readiness_checks: dict[str, Callable[[], None]] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def default_quota(self) -> QuotaLimits:
        return QuotaLimits(
            max_in_flight=self.settings.quota_max_in_flight,
            images_per_day=self.settings.quota_images_per_day,
        )

    @property
    def signed_url_ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.signed_url_ttl_s)

    def close(self) -> None:
        close_all(self._closers)


def build_services(settings: Settings, *, generator: ImageGenerator | None = None) -> Services:
    closers: list[Callable[[], None]] = []
    jobs, key_store = build_stores(settings, closers)
    signer = build_url_signer(settings)
    blobs = build_blob_store(settings, signer)
    redis_client = build_redis_client(settings, closers)
    cache = FailOpenRequestCache(build_request_cache(settings, redis_client=redis_client))

    keys = ApiKeyService(key_store, pepper=settings.api_key_pepper.get_secret_value())
    if settings.bootstrap_api_key is not None:
        keys.ensure(
            owner=settings.bootstrap_api_key_owner,
            secret=settings.bootstrap_api_key.get_secret_value(),
        )

    job_waits = JobWaits()
    # Workers in other processes say when a job ends; the waiting requests answer at once.
    bus = build_job_events(settings, redis_client=redis_client)
    job_events = FailOpenJobEvents(bus) if bus is not None else None
    if job_events is not None:
        closers.append(job_events.subscribe(job_waits.notify))
    # Before the inline queue, so it closes after the queue's last job has ended.
    webhooks = build_webhooks(settings, jobs=jobs, blobs=blobs, closers=closers)
    queue: JobQueue
    if settings.job_queue == "inline":
        if generator is None:
            from gpu_worker.wiring import build_engine

            generator = build_engine(settings)
            # Registered before the queue, so it closes after the queue's last job.
            closers.append(getattr(generator, "close", lambda: None))
        queue = _start_inline_queue(
            settings,
            jobs,
            blobs,
            cache,
            generator,
            closers,
            on_done=job_waits.notify,
            webhooks=webhooks,
        )
    elif settings.job_queue == "memory":
        from dal.memory import MemoryJobQueue

        queue = MemoryJobQueue()
    elif settings.job_queue in ("pubsub", "celery"):
        queue = build_broker_queue(settings, closers)
    else:
        raise UnsupportedAdapter(
            "JOB_QUEUE", str(settings.job_queue), "inline, memory, pubsub, celery"
        )

    job_service = JobService(
        jobs=jobs,
        queue=queue,
        cache=cache,
        model_id=_model_id(settings, generator),
        defaults=_generation_defaults(settings, generator),
        idempotency_ttl_s=settings.idempotency_ttl_s,
        dedupe_seeded_requests=settings.dedupe_seeded_requests,
        failpoints=Failpoints.from_spec(settings.failpoints),
        enqueued_on_create=settings.job_queue == "inline",
    )
    checks: dict[str, Callable[[], None]] = {"job_store": jobs.ping, "blob_store": blobs.ping}
    # /metrics counts queued and running jobs in this store (capped, cached: see collectors).
    JOBS_BY_STATUS.track(jobs)
    closers.append(lambda: JOBS_BY_STATUS.untrack(jobs))
    return Services(
        settings=settings,
        jobs=jobs,
        keys=keys,
        blobs=blobs,
        url_signer=signer if settings.blob_store in ("filesystem", "memory") else None,
        queue=queue,
        cache=cache,
        job_service=job_service,
        webhooks=webhooks,
        submit_limiter=FailOpenRateLimiter(
            build_rate_limiter(
                settings,
                limit=settings.rate_limit_submit_per_minute,
                period_s=60,
                burst=settings.rate_limit_submit_burst,
                scope="submit",
                redis_client=redis_client,
            ),
            limit=settings.rate_limit_submit_burst,
        ),
        read_limiter=FailOpenRateLimiter(
            build_rate_limiter(
                settings,
                limit=settings.rate_limit_read_per_minute,
                period_s=60,
                burst=settings.rate_limit_read_burst,
                scope="read",
                redis_client=redis_client,
            ),
            limit=settings.rate_limit_read_burst,
        ),
        outbox=OutboxSweeper(
            jobs,
            queue,
            grace_s=settings.outbox_grace_s,
            give_up_s=settings.outbox_give_up_s,
        ),
        generator=generator,
        job_waits=job_waits,
        job_events=job_events,
        readiness_checks=checks,
        _closers=closers,
    )


def _start_inline_queue(
    settings: Settings,
    jobs: JobStore,
    blobs: BlobStore,
    cache: RequestCache,
    generator: ImageGenerator,
    closers: list[Callable[[], None]],
    on_done: Callable[[str], None],
    webhooks: WebhookDispatcher,
) -> JobQueue:
    from dal.inline import InlineJobQueue
    from gpu_worker.runner import RunOutcome
    from gpu_worker.wiring import build_runner, recover_interrupted_jobs, remember_finished_job

    runner = build_runner(
        settings, jobs=jobs, blobs=blobs, generator=generator, on_finished=webhooks.notify
    )

    def run_job(job_id: str) -> RunOutcome:
        outcome = runner.run(job_id)
        if outcome == RunOutcome.SUCCEEDED:
            remember_finished_job(cache, jobs, job_id, settings)
        on_done(job_id)
        return outcome

    queue = InlineJobQueue(run_job, workers=settings.inline_workers)
    recover_interrupted_jobs(jobs, queue.enqueue_id, on_failed=webhooks.notify)
    queue.start()
    closers.append(lambda: queue.close(timeout=settings.shutdown_grace_s))
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
