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
from dal.inline import InlineJobQueue
from dal.memory import (
    MemoryApiKeyStore,
    MemoryBlobStore,
    MemoryJobQueue,
    MemoryJobStore,
    MemoryRateLimiter,
)
from dal.ports import ApiKeyStore, BlobStore, JobQueue, JobStore, RateLimiter
from dal.settings import Settings
from dal.url_signing import HmacUrlSigner
from gpu_worker.generation import ImageGenerator
from gpu_worker.model_folder import read_default_size

log = logging.getLogger(__name__)

FALLBACK_IMAGE_SIZE = 512


class UnsupportedAdapter(RuntimeError):
    def __init__(self, variable: str, value: str, supported: str) -> None:
        super().__init__(
            f"{variable}={value} has no adapter in this version (supported: {supported})"
        )


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    keys: ApiKeyService
    blobs: BlobStore
    # Set when the API serves blobs itself (filesystem, memory): verifies their signed URLs.
    url_signer: HmacUrlSigner | None
    queue: JobQueue
    job_service: JobService
    submit_limiter: RateLimiter
    read_limiter: RateLimiter
    generator: ImageGenerator | None = None
    readiness_checks: dict[str, Callable[[], None]] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def signed_url_ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.signed_url_ttl_s)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                log.warning("error while shutting down", exc_info=True)
        self._closers.clear()


def build_services(settings: Settings, *, generator: ImageGenerator | None = None) -> Services:
    closers: list[Callable[[], None]] = []
    jobs, key_store = build_stores(settings, closers)
    signer = HmacUrlSigner(
        settings.url_signing_secret.get_secret_value(), base_url=settings.public_base_url
    )
    blobs = _build_blob_store(settings, signer)

    keys = ApiKeyService(key_store, pepper=settings.api_key_pepper.get_secret_value())
    if settings.bootstrap_api_key is not None:
        keys.ensure(
            owner=settings.bootstrap_api_key_owner,
            secret=settings.bootstrap_api_key.get_secret_value(),
        )

    queue: JobQueue
    if settings.job_queue == "inline":
        if generator is None:
            from gpu_worker.wiring import build_engine

            generator = build_engine(settings)
        queue = _start_inline_queue(settings, jobs, blobs, generator, closers)
    elif settings.job_queue == "memory":
        queue = MemoryJobQueue()
    else:
        raise UnsupportedAdapter("JOB_QUEUE", str(settings.job_queue), "inline, memory")

    job_service = JobService(
        jobs=jobs,
        queue=queue,
        model_id=_model_id(settings, generator),
        defaults=_generation_defaults(settings, generator),
    )
    if settings.rate_limiter != "memory":
        raise UnsupportedAdapter("RATE_LIMITER", str(settings.rate_limiter), "memory")
    checks: dict[str, Callable[[], None]] = {"job_store": jobs.ping, "blob_store": blobs.ping}
    return Services(
        settings=settings,
        jobs=jobs,
        keys=keys,
        blobs=blobs,
        url_signer=signer,
        queue=queue,
        job_service=job_service,
        submit_limiter=MemoryRateLimiter(
            limit=settings.rate_limit_submit_per_minute,
            period_s=60,
            burst=settings.rate_limit_submit_burst,
        ),
        read_limiter=MemoryRateLimiter(
            limit=settings.rate_limit_read_per_minute,
            period_s=60,
            burst=settings.rate_limit_read_burst,
        ),
        generator=generator,
        readiness_checks=checks,
        _closers=closers,
    )


def build_stores(
    settings: Settings, closers: list[Callable[[], None]]
) -> tuple[JobStore, ApiKeyStore]:
    if settings.job_store == "memory":
        return MemoryJobStore(), MemoryApiKeyStore()
    if settings.job_store == "sql":
        from dal.sql import SqlApiKeyStore, SqlJobStore, create_sql_engine, metadata

        engine = create_sql_engine(settings.resolved_database_url)
        # Embedded profile: create the schema in place. Managed databases get migrations.
        metadata.create_all(engine)
        closers.append(engine.dispose)
        return SqlJobStore(engine), SqlApiKeyStore(engine)
    raise UnsupportedAdapter("JOB_STORE", str(settings.job_store), "sql, memory")


def _build_blob_store(settings: Settings, signer: HmacUrlSigner) -> BlobStore:
    if settings.blob_store == "filesystem":
        from dal.filesystem import FilesystemBlobStore

        store = FilesystemBlobStore(settings.resolved_blob_dir, signer)
        store.ping()
        return store
    if settings.blob_store == "memory":
        return MemoryBlobStore(signer)
    raise UnsupportedAdapter("BLOB_STORE", str(settings.blob_store), "filesystem, memory")


def _start_inline_queue(
    settings: Settings,
    jobs: JobStore,
    blobs: BlobStore,
    generator: ImageGenerator,
    closers: list[Callable[[], None]],
) -> InlineJobQueue:
    from gpu_worker.wiring import build_runner, recover_interrupted_jobs

    runner = build_runner(settings, jobs=jobs, blobs=blobs, generator=generator)
    queue = InlineJobQueue(runner.run, workers=settings.inline_workers)
    recover_interrupted_jobs(jobs, queue.enqueue_id)
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
