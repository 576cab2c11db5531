"""The shared core of every process: the adapters each of them needs, and the job finisher with
the side effects of a job's end. Each process kind's composition root builds on it:
`api.wiring.build_services` (the API, and the embedded profile), `gpu_worker.wiring.
build_worker_services` (push, pull and Celery workers), and the admin commands.

Nothing connects at import; `build_core` is called once per process, and `Core.close` closes
what it opened, newest first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dal.dispatcher import UNLIMITED, Dispatcher
from dal.factory import (
    Closers,
    build_blob_store,
    build_fair_line,
    build_job_events,
    build_key_revocations,
    build_redis_client,
    build_request_cache,
    build_stores,
    build_url_signer,
    close_all,
)
from dal.fail_open import FailOpenJobEvents, FailOpenRequestCache
from dal.failpoints import Failpoints
from dal.finisher import JobFinisher
from dal.ports import (
    ApiKeyStore,
    BlobStore,
    FairLine,
    JobQueue,
    JobStore,
    KeyRevocations,
    RequestCache,
)
from dal.records import Job, JobStatus
from dal.request_keys import finished_job_key
from dal.settings import Settings
from dal.url_signing import HmacUrlSigner
from dal.webhooks.dispatcher import WebhookDispatcher
from dal.webhooks.factory import build_webhook_dispatcher
from dal.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    jobs: JobStore
    api_keys: ApiKeyStore
    blobs: BlobStore
    url_signer: HmacUrlSigner
    # Idempotency keys and finished-job dedupe; fails open (a cache outage costs a duplicate).
    cache: RequestCache
    # Tells every API process that a job ended; None with JOB_EVENTS=none.
    job_events: FailOpenJobEvents | None
    # Delivers the webhooks of jobs ended in this process; None in short-lived commands,
    # whose endings the webhook redrive of a long-lived process delivers.
    webhooks: WebhookDispatcher | None
    finisher: JobFinisher
    # The line for the GPUs every process of the deployment shares (dal.dispatcher).
    line: FairLine
    # Tells every process that a key was revoked; None where no channel reaches them all
    # (then no process keeps verified keys in memory).
    key_revocations: KeyRevocations | None = None
    redis: Any | None = None
    closers: Closers = field(default_factory=list)

    def close(self) -> None:
        close_all(self.closers)

    def build_dispatcher(self, queue: JobQueue, *, marks_hand_overs: bool = True) -> Dispatcher:
        """The fair dispatcher of this process onto `queue`. Every ending in this process
        frees its slot and hands the next jobs over (composition roots call this once)."""
        settings = self.settings
        dispatcher = Dispatcher(
            self.jobs,
            queue,
            self.line,
            capacity=settings.resolved_dispatch_capacity or UNLIMITED,
            marks_hand_overs=marks_hand_overs,
            grace_s=settings.outbox_grace_s,
            failpoints=Failpoints.from_spec(settings.failpoints),
        )
        # First: the slot is free before a waiter hears of the ending (its client may submit
        # its next job at once, and would find the line full).
        self.finisher.add_handler("dispatch", dispatcher.ended, first=True)
        return dispatcher


class OnCore:
    """What every process's services read straight from their core (API, worker)."""

    core: Core

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def jobs(self) -> JobStore:
        return self.core.jobs

    @property
    def blobs(self) -> BlobStore:
        return self.core.blobs

    @property
    def finisher(self) -> JobFinisher:
        return self.core.finisher

    def close(self) -> None:
        self.core.close()


def build_core(
    settings: Settings,
    *,
    deliver_webhooks: bool = True,
    webhook_sender: WebhookSender | None = None,
) -> Core:
    closers: Closers = []
    try:
        jobs, api_keys = build_stores(settings, closers)
        signer = build_url_signer(settings)
        blobs = build_blob_store(settings, signer)
        redis_client = build_redis_client(settings, closers)
        cache = FailOpenRequestCache(build_request_cache(settings, redis_client=redis_client))
        bus = build_job_events(settings, redis_client=redis_client)
        job_events = FailOpenJobEvents(bus) if bus is not None else None
        line = build_fair_line(settings, redis_client=redis_client)
        key_revocations = build_key_revocations(settings, redis_client=redis_client)
        webhooks = (
            build_webhook_dispatcher(
                settings, jobs=jobs, blobs=blobs, closers=closers, sender=webhook_sender
            )
            if deliver_webhooks
            else None
        )
    except BaseException:
        close_all(closers)
        raise
    finisher = JobFinisher(jobs, dead_letter_after_attempts=settings.max_delivery_attempts)
    if settings.dedupe_seeded_requests:
        finisher.add_handler(
            "dedupe memory", remember_succeeded(cache, ttl_s=settings.idempotency_ttl_s)
        )
    if job_events is not None:
        finisher.add_handler("job event", lambda job: job_events.publish_finished(job.id))
    if webhooks is not None:
        finisher.add_handler("webhook", schedule_webhook(webhooks))
    return Core(
        settings=settings,
        jobs=jobs,
        api_keys=api_keys,
        blobs=blobs,
        url_signer=signer,
        cache=cache,
        job_events=job_events,
        webhooks=webhooks,
        finisher=finisher,
        line=line,
        key_revocations=key_revocations,
        redis=redis_client,
        closers=closers,
    )


def remember_succeeded(cache: RequestCache, *, ttl_s: int) -> Callable[[Job], None]:
    """Remember a succeeded job so that an identical seeded request reuses its images."""

    def remember(job: Job) -> None:
        if job.status == JobStatus.SUCCEEDED:
            cache.put(finished_job_key(job), job.id, ttl_s=ttl_s)

    return remember


def schedule_webhook(webhooks: WebhookDispatcher) -> Callable[[Job], None]:
    def schedule(job: Job) -> None:
        if job.webhook_url is not None:
            webhooks.notify(job.id)

    return schedule
