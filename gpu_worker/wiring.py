"""The worker's composition root: the shared core (dal.core), the model behind its batcher,
the job runner. Used by every process that runs jobs: the push and pull worker (gpu_worker.app),
the Celery worker, and the API of the embedded profile (its inline queue).

Importing it does not import torch: the engine modules are imported inside build_engine, so
that the API image, which holds no pipeline, can import this module and say why it cannot
run one.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dal.core import Core, OnCore, build_core
from dal.dispatcher import Dispatcher
from dal.errors import (
    ConfigurationError,
    DalError,
    ModelNotFound,
    PipelineNotInstalled,
)
from dal.factory import LazyJobQueue, build_broker_queue
from dal.finisher import WORKER_RESTARTED, JobFinisher
from dal.ports import ImageGenerator, JobStore
from dal.records import JobStatus
from dal.settings import Settings
from dal.telemetry import GPU_MEMORY
from dal.telemetry.metrics import MODEL_LOAD_SECONDS, MODEL_WARM_UP_SECONDS
from gpu_worker.cpu_pinning import CpuSplit, allowed_cpus, pin_this_process, split_cpus
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
    return split_cpus(settings.pipeline_cpus, allowed_cpus())


def build_runner(settings: Settings, *, core: Core, generator: ImageGenerator) -> JobRunner:
    config = RunnerConfig(
        progress_write_interval_s=settings.progress_write_interval_s,
        cancel_check_interval_s=settings.cancel_check_interval_s,
        lease_s=settings.job_lease_s,
        heartbeat_s=settings.resolved_job_heartbeat_s,
        # Only a queue that redelivers can retry; the inline queue fails the job instead.
        retry_transient=settings.job_queue != "inline",
        duplicate_wait_s=settings.duplicate_wait_s if settings.job_queue != "inline" else 0.0,
    )
    return JobRunner(
        jobs=core.jobs,
        blobs=core.blobs,
        generator=generator,
        finisher=core.finisher,
        config=config,
    )


def recover_interrupted_jobs(jobs: JobStore, finisher: JobFinisher, *, batch: int = 500) -> int:
    """At the start of a process that runs jobs in-process (the embedded profile): jobs left
    running by a process that stopped are failed (their generation is lost). Jobs still queued
    wait for the dispatcher, whose line this process rebuilds from the store. Returns how many
    were failed."""
    failed = 0
    for job in jobs.list_by_status(JobStatus.RUNNING, limit=batch):
        try:
            finisher.fail(job.id, WORKER_RESTARTED)
            failed += 1
        except DalError:
            log.warning("could not fail interrupted job %s", job.id, exc_info=True)
    if failed:
        log.info("recovered jobs: %d failed as interrupted", failed)
    return failed


@dataclass
class WorkerServices(OnCore):
    core: Core
    generator: ImageGenerator
    runner: JobRunner
    push_auth: PushAuthenticator
    # Hands the next waiting jobs over when one of this worker's jobs ends; None when the API
    # runs the jobs' queue itself (inline, memory).
    dispatcher: Dispatcher | None = None
    readiness_checks: dict[str, Callable[[], None]] = field(default_factory=dict)

    def run_job(self, job_id: str) -> RunOutcome:
        return self.runner.run(job_id)


def build_push_auth(settings: Settings) -> PushAuthenticator:
    if settings.push_auth == "none":
        return NoPushAuth()
    if not (settings.push_audience and settings.push_service_account):
        raise ConfigurationError("PUSH_AUTH=oidc needs PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT")
    return OidcPushAuth(
        audience=settings.push_audience,
        service_account_email=settings.push_service_account,
        certs_url=settings.push_oidc_certs_url,
    )


def build_worker_services(
    settings: Settings, *, generator: ImageGenerator | None = None
) -> WorkerServices:
    """The worker process's composition root: the shared core, the model (loaded and warmed
    up unless given; closed with the services only when built here), the runner."""
    core = build_core(settings)
    try:
        push_auth = build_push_auth(settings)
        dispatcher = None
        if settings.job_queue in ("pubsub", "celery"):
            # A job ending here frees its slot: this worker publishes the next ones in line
            # (an API instance may have no CPU between requests to do it).
            queue = LazyJobQueue(lambda: build_broker_queue(settings, core.closers))
            dispatcher = core.build_dispatcher(queue)
        if generator is None:
            generator = build_engine(settings)
            # After the core's closers: the model stops first, then the stores.
            core.closers.append(generator.close)
    except BaseException:
        core.close()
        raise
    return WorkerServices(
        core=core,
        generator=generator,
        runner=build_runner(settings, core=core, generator=generator),
        push_auth=push_auth,
        dispatcher=dispatcher,
        readiness_checks={
            "job_store": core.jobs.ping,
            "blob_store": core.blobs.ping,
            "model": generator.check_ready,
        },
    )
