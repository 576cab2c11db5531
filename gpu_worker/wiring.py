"""Builds the worker's parts from settings: the model folder, the engine, the job runner.

Imported only by processes that run jobs; importing it does not import torch (the engine
module is imported inside build_engine).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dal.errors import JobNotFound, ModelNotFound, PipelineNotInstalled, StoreUnavailable
from dal.factory import (
    build_blob_store,
    build_job_events,
    build_redis_client,
    build_request_cache,
    build_stores,
    build_url_signer,
    close_all,
)
from dal.fail_open import FailOpenJobEvents, FailOpenRequestCache
from dal.ports import BlobStore, ImageGenerator, JobStore, RequestCache
from dal.records import JobChanges, JobError, JobStatus, utcnow
from dal.request_keys import finished_job_key
from dal.settings import Settings
from dal.telemetry import GPU_MEMORY
from dal.telemetry.metrics import JOBS_FINISHED, MODEL_LOAD_SECONDS, MODEL_WARM_UP_SECONDS
from gpu_worker.cpu_pinning import CpuSplit
from gpu_worker.model_folder import is_model_folder
from gpu_worker.push_auth import NoPushAuth, OidcPushAuth, PushAuthenticator
from gpu_worker.runner import JobRunner, RunnerConfig, RunOutcome

log = logging.getLogger(__name__)


# What running the pipeline imports; the API image holds none of them.
PIPELINE_PACKAGES = ("torch", "diffusers", "transformers")


def require_pipeline_packages(settings: Settings) -> None:
    """Refuse at once, saying what to do, where the pipeline cannot run: an API image (built
    from tools/locks/api.txt) started with the inline queue would otherwise fail deep in the
    model's loading with a bare ModuleNotFoundError."""
    absent = [name for name in PIPELINE_PACKAGES if importlib.util.find_spec(name) is None]
    if absent:
        raise PipelineNotInstalled(
            f"JOB_QUEUE={settings.job_queue} runs the diffusion pipeline in this process, but "
            f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed here "
            "(the API image holds no pipeline): hand jobs to GPU workers with "
            "JOB_QUEUE=pubsub or JOB_QUEUE=celery, or install the `worker` extra "
            "(tools/locks/worker.txt and torch)"
        )


def ensure_model_folder(settings: Settings) -> Path:
    """MODEL_PATH when set (it must be a diffusers folder); otherwise the tiny development
    model, built offline on first use."""
    if settings.model_path is not None:
        if not is_model_folder(settings.model_path):
            raise ModelNotFound(
                f"MODEL_PATH={settings.model_path} is not a diffusers model folder "
                "(no model_index.json)"
            )
        return settings.model_path
    from gpu_worker.tiny_model import build_tiny_pipeline

    path = settings.resolved_model_path
    if not is_model_folder(path):
        log.info("MODEL_PATH is unset: building the tiny development model in %s", path)
    return build_tiny_pipeline(path)


def build_engine(settings: Settings) -> ImageGenerator:
    """The model, loaded and warmed up, behind a dynamic batcher (MAX_BATCH_SIZE images,
    MAX_BATCH_WAIT_MS). With PIPELINE_PROCESS (the default) the pipeline runs in a child
    process and this process never imports torch. Called once per process, before it reports
    ready."""
    from gpu_worker.batching import BatchEngine, BatchingGenerator
    from gpu_worker.engine_process import EngineConfig, EngineProcess, load_engine

    require_pipeline_packages(settings)
    split = _cpu_split(settings) if settings.pipeline_process else None
    config = EngineConfig(
        model_path=ensure_model_folder(settings),
        model_id=settings.model_id,
        compile_unet=settings.torch_compile,
        vae_slicing_min_batch=settings.vae_slicing_min_batch,
        warm_up=settings.warm_up,
        torch_threads=settings.torch_threads,
        log_level=settings.log_level,
        log_format=settings.resolved_log_format,
        gcp_project=settings.gcp_project,
        cpus=split.pipeline if split else None,
    )
    engine: BatchEngine
    if settings.pipeline_process:
        process = EngineProcess(config)
        info = process.start()
        if split is not None and info.device == "cpu" and split.serving:
            from gpu_worker.cpu_pinning import pin_this_process

            pin_this_process(split.serving)
            log.info("pipeline on CPUs %s, serving on CPUs %s", split.pipeline, split.serving)
        # This process never touches CUDA: its /metrics shows what the child reports.
        GPU_MEMORY.report_from(process.gpu_memory)
        load_s, warm_up_s, device = info.load_seconds, info.warm_up_seconds, info.device
        engine = process
    else:
        in_process = load_engine(config)
        load_s, warm_up_s, device = (
            in_process.load_seconds,
            in_process.warm_up_seconds,
            in_process.device,
        )
        engine = in_process
    MODEL_LOAD_SECONDS.set(load_s)
    log.info("model %s loaded on %s in %.2f s", engine.model_id, device, load_s)
    if settings.warm_up:
        MODEL_WARM_UP_SECONDS.set(warm_up_s)
        log.info("warm-up generation took %.2f s", warm_up_s)
    return BatchingGenerator(
        engine,
        max_batch_images=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000,
    )


def _cpu_split(settings: Settings) -> CpuSplit | None:
    if not settings.pipeline_cpus:
        return None
    from gpu_worker.cpu_pinning import allowed_cpus, split_cpus

    return split_cpus(settings.pipeline_cpus, allowed_cpus())


def build_runner(
    settings: Settings,
    *,
    jobs: JobStore,
    blobs: BlobStore,
    generator: ImageGenerator,
    on_finished: Callable[[str], None] | None = None,
) -> JobRunner:
    config = RunnerConfig(
        progress_write_interval_s=settings.progress_write_interval_s,
        cancel_check_interval_s=settings.cancel_check_interval_s,
        lease_s=settings.job_lease_s,
        # Only a queue that redelivers can retry; the inline queue fails the job instead.
        retry_transient=settings.job_queue != "inline",
        duplicate_wait_s=settings.duplicate_wait_s if settings.job_queue != "inline" else 0.0,
    )
    return JobRunner(
        jobs=jobs, blobs=blobs, generator=generator, config=config, on_finished=on_finished
    )


def recover_interrupted_jobs(
    jobs: JobStore,
    enqueue: Callable[[str], None],
    *,
    batch: int = 500,
    on_failed: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """At the start of a process that runs jobs in-process (the embedded profile): jobs still
    queued are enqueued again, and jobs left running by a process that stopped are failed
    (their generation is lost). Returns (requeued, failed)."""
    requeued = failed = 0
    for job in jobs.list_by_status(JobStatus.QUEUED, limit=batch):
        enqueue(job.id)
        requeued += 1
    for job in jobs.list_by_status(JobStatus.RUNNING, limit=batch):
        try:
            jobs.transition(
                job.id,
                expected={JobStatus.RUNNING},
                target=JobStatus.FAILED,
                changes=JobChanges(
                    finished_at=utcnow(),
                    error=JobError(
                        "worker_restarted",
                        "the process running this job stopped before it finished; submit again",
                    ),
                ),
            )
            failed += 1
            JOBS_FINISHED.labels("failed").inc()
            if on_failed is not None:
                on_failed(job.id)
        except Exception:
            log.warning("could not fail interrupted job %s", job.id, exc_info=True)
    if requeued or failed:
        log.info("recovered jobs: %d requeued, %d failed as interrupted", requeued, failed)
    return requeued, failed


@dataclass
class WorkerServices:
    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    cache: RequestCache
    generator: ImageGenerator
    runner: JobRunner
    push_auth: PushAuthenticator
    readiness_checks: dict[str, Callable[[], None]] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def run_job(self, job_id: str) -> RunOutcome:
        outcome = self.runner.run(job_id)
        if outcome == RunOutcome.SUCCEEDED:
            remember_finished_job(self.cache, self.jobs, job_id, self.settings)
        return outcome

    def close(self) -> None:
        close_all(self._closers)


def remember_finished_job(
    cache: RequestCache, jobs: JobStore, job_id: str, settings: Settings
) -> None:
    """Record a succeeded job so an identical seeded request can reuse its images. Best
    effort: a cache outage only costs a future duplicate generation."""
    if not settings.dedupe_seeded_requests:
        return
    try:
        job = jobs.get(job_id)
        cache.put(finished_job_key(job), job.id, ttl_s=settings.idempotency_ttl_s)
    except (StoreUnavailable, JobNotFound) as exc:
        log.warning("could not record finished job %s in the request cache: %s", job_id, exc)


def build_push_auth(settings: Settings) -> PushAuthenticator:
    if settings.push_auth == "none":
        return NoPushAuth()
    if not (settings.push_audience and settings.push_service_account):
        raise ValueError("PUSH_AUTH=oidc needs PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT")
    return OidcPushAuth(
        audience=settings.push_audience,
        service_account_email=settings.push_service_account,
        certs_url=settings.push_oidc_certs_url,
    )


def build_worker_services(
    settings: Settings, *, generator: ImageGenerator | None = None
) -> WorkerServices:
    """The worker process's one wiring function: stores, model (loaded and warmed), runner."""
    closers: list[Callable[[], None]] = []
    jobs, _ = build_stores(settings, closers)
    blobs = build_blob_store(settings, build_url_signer(settings))
    redis_client = build_redis_client(settings, closers)
    cache = FailOpenRequestCache(build_request_cache(settings, redis_client=redis_client))
    bus = build_job_events(settings, redis_client=redis_client)
    job_events = FailOpenJobEvents(bus) if bus is not None else None
    if generator is None:
        generator = build_engine(settings)
        closers.append(getattr(generator, "close", lambda: None))
    # Delivers the webhooks of the jobs this worker ends, off the ack's path.
    from api.webhooks import build_webhooks

    webhooks = build_webhooks(settings, jobs=jobs, blobs=blobs, closers=closers)

    def on_finished(job_id: str) -> None:
        webhooks.notify(job_id)
        if job_events is not None:
            job_events.publish_finished(job_id)  # the API processes' waiting requests

    runner = build_runner(
        settings, jobs=jobs, blobs=blobs, generator=generator, on_finished=on_finished
    )
    return WorkerServices(
        settings=settings,
        jobs=jobs,
        blobs=blobs,
        cache=cache,
        generator=generator,
        runner=runner,
        push_auth=build_push_auth(settings),
        readiness_checks={"job_store": jobs.ping, "blob_store": blobs.ping},
        _closers=closers,
    )
