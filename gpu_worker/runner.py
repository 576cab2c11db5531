"""The job runner: claim → generate → store images → finish. The same code serves every queue
(inline threads, Pub/Sub push, Celery).

Idempotent by construction: only the caller that wins the claim generates, so a duplicate
delivery of a claimed or finished job does nothing. A claim is a lease: if the worker holding
it dies, a redelivery takes the job over once the lease has expired.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dal.errors import (
    GenerationError,
    JobCanceled,
    JobNotFound,
    StoreUnavailable,
    TransitionConflict,
)
from dal.finisher import JobFinisher
from dal.ports import BlobStore, ImageGenerator, JobStore
from dal.records import (
    GenerationRequest,
    ImageRef,
    Job,
    JobError,
    JobStatus,
    utcnow,
)
from dal.telemetry import job_context, span
from dal.telemetry.metrics import (
    GENERATION_SECONDS,
    JOB_RUNS,
    QUEUE_WAIT_SECONDS,
)
from gpu_worker.lease_keeper import LeaseKeeper
from gpu_worker.progress import ProgressReporter

log = logging.getLogger(__name__)


class RunOutcome(enum.StrEnum):
    """What happened, and so what the delivery should answer: `acknowledge` or retry later."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent: retrying cannot help
    CANCELED = "canceled"
    DUPLICATE = "duplicate"  # already finished (here or by another delivery)
    NOT_FOUND = "not_found"
    RETRY = "retry"  # transient failure: the job is queued again, deliver it later
    # Another worker holds a live lease on it. Acknowledged: this delivery can do nothing
    # useful, and refusing it would back the push subscription off (Pub/Sub adjusts its push
    # rate to the rate of success responses: https://cloud.google.com/pubsub/docs/push). If
    # that worker dies, the sweeper takes the job back once its lease lapses.
    IN_PROGRESS = "in_progress"

    @property
    def acknowledge(self) -> bool:
        return self is not RunOutcome.RETRY


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    progress_write_interval_s: float = 0.5
    cancel_check_interval_s: float = 0.25
    lease_s: float = 30.0
    heartbeat_s: float = 10.0
    # False (inline queue): a transient failure fails the job, since nothing will redeliver it.
    # True (Pub/Sub, Celery): the job goes back to queued and the delivery is answered "retry".
    retry_transient: bool = False
    # How long a duplicate delivery of a running job waits for it to finish (and acknowledges)
    # before answering "in progress" so the queue redelivers later.
    duplicate_wait_s: float = 0.0
    duplicate_poll_s: float = 0.25


def image_key(job: Job, index: int) -> str:
    # The owner appears only as a digest: keys end up in URLs and logs.
    owner_digest = hashlib.sha256(job.owner.encode()).hexdigest()[:16]
    return f"images/{owner_digest}/{job.id}/{index}.png"


class _TransientFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JobRunner:
    def __init__(
        self,
        *,
        jobs: JobStore,
        blobs: BlobStore,
        generator: ImageGenerator,
        config: RunnerConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        finisher: JobFinisher | None = None,
    ) -> None:
        """`finisher` ends the jobs this runner finishes (with the process's side effects of
        an ending); by default one with no side effects but the metric."""
        self._jobs = jobs
        self._finisher = finisher or JobFinisher(jobs, clock=clock)
        self._blobs = blobs
        self._generator = generator
        self._config = config or RunnerConfig()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._leases = LeaseKeeper(self._config.heartbeat_s)

    def run(self, job_id: str) -> RunOutcome:
        # Every queue (push, pull, Celery, inline) comes through here: name the job on every
        # line logged meanwhile, and give its handling a span in the job's trace.
        with job_context(job_id), span("run job", attributes={"txt2img.job_id": job_id}) as run:
            outcome = self._run(job_id)
            run.set_attribute("txt2img.outcome", outcome.value)
        JOB_RUNS.labels(outcome.value).inc()
        return outcome

    def _run(self, job_id: str) -> RunOutcome:
        # Tell a batching generator this job is on its way, so the batch it is forming waits
        # for it (and one with nobody on the way starts at once).
        with self._generator.arriving():
            return self._claim_and_run(job_id)

    def _claim_and_run(self, job_id: str) -> RunOutcome:
        try:
            job = self._claim(job_id)
        except StoreUnavailable as exc:
            log.warning("job %s: job store unavailable at claim: %s", job_id, exc)
            return RunOutcome.RETRY
        if isinstance(job, RunOutcome):
            return job
        if job.attempts == 1 and job.started_at is not None:
            QUEUE_WAIT_SECONDS.observe(max(0.0, (job.started_at - job.created_at).total_seconds()))

        started = self._monotonic()
        try:
            outcome = self._generate_and_store(job)
        except _TransientFailure as failure:
            outcome = self._transient(job, failure.code, failure.message)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job_id)
            outcome = self._fail(job, "internal_error", f"unexpected error: {type(exc).__name__}")
        log.info(
            "job %s %s (attempt %d) in %.3f s",
            job_id,
            outcome.value,
            job.attempts,
            self._monotonic() - started,
        )
        return outcome

    # --- steps -------------------------------------------------------------------------------

    def _claim(self, job_id: str) -> Job | RunOutcome:
        deadline = self._monotonic() + self._config.duplicate_wait_s
        while True:
            try:
                return self._jobs.claim(job_id, lease_s=self._config.lease_s)
            except JobNotFound:
                log.warning("job %s does not exist; nothing to run", job_id)
                return RunOutcome.NOT_FOUND
            except TransitionConflict as conflict:
                if conflict.job.status.is_terminal:
                    log.info("job %s is already %s", job_id, conflict.job.status.value)
                    return RunOutcome.DUPLICATE
            # Running under another worker's live lease: wait for it to finish (then this
            # delivery is a duplicate) or for the lease to lapse (then take the job over).
            if self._monotonic() >= deadline:
                return RunOutcome.IN_PROGRESS
            self._sleep(self._config.duplicate_poll_s)

    def _generate_and_store(self, job: Job) -> RunOutcome:
        params = job.params
        request = GenerationRequest(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            width=params.width,
            height=params.height,
            num_inference_steps=params.num_inference_steps,
            guidance_scale=params.guidance_scale,
            seeds=params.image_seeds(),
        )
        reporter = ProgressReporter(
            self._jobs,
            job.id,
            write_interval_s=self._config.progress_write_interval_s,
            check_interval_s=self._config.cancel_check_interval_s,
            lease_s=self._config.lease_s,
            clock=self._monotonic,
        )
        with self._leases.keep(reporter.renew_lease):
            return self._generate_store_finish(job, request, reporter)

    def _generate_store_finish(
        self, job: Job, request: GenerationRequest, reporter: ProgressReporter
    ) -> RunOutcome:
        generating = self._monotonic()
        try:
            with span("generate", attributes={"txt2img.images": len(request.seeds)}):
                images = self._generator.generate(request, on_step=reporter)
            GENERATION_SECONDS.observe(self._monotonic() - generating)
        except JobCanceled:
            return RunOutcome.CANCELED
        except GenerationError as exc:
            if exc.retryable:
                raise _TransientFailure(exc.code, exc.message) from exc
            return self._fail(job, exc.code, exc.message)
        except StoreUnavailable as exc:
            raise _TransientFailure("job_store_unavailable", str(exc)) from exc

        refs: list[ImageRef] = []
        try:
            for index, image in enumerate(images):
                key = image_key(job, index)
                self._blobs.put(key, image.png, content_type="image/png")
                refs.append(
                    ImageRef(key=key, width=image.width, height=image.height, seed=image.seed)
                )
        except StoreUnavailable as exc:
            self._delete_quietly(refs)
            raise _TransientFailure("storage_unavailable", str(exc)) from exc

        try:
            self._finisher.succeed(job.id, tuple(refs))
        except TransitionConflict as conflict:
            # Canceled while we were storing (the job is final without these images), or our
            # lease lapsed and another worker finished it (its images are the same keys).
            if conflict.job.status == JobStatus.CANCELED:
                self._delete_quietly(refs)
                return RunOutcome.CANCELED
            return RunOutcome.DUPLICATE
        except StoreUnavailable as exc:
            raise _TransientFailure("job_store_unavailable", str(exc)) from exc
        return RunOutcome.SUCCEEDED

    def _transient(self, job: Job, code: str, message: str) -> RunOutcome:
        if not self._config.retry_transient:
            return self._fail(job, code, message)
        log.warning("job %s: transient failure %s: %s; releasing for retry", job.id, code, message)
        try:
            self._jobs.release(job.id, error=JobError(code, message))
        except TransitionConflict:
            return RunOutcome.CANCELED
        except StoreUnavailable:
            # The lease will lapse and the redelivery takes the job over.
            log.warning("job %s: could not release; its lease will expire", job.id)
        return RunOutcome.RETRY

    def _fail(self, job: Job, code: str, message: str) -> RunOutcome:
        try:
            self._finisher.fail(job.id, JobError(code, message))
        except TransitionConflict:
            return RunOutcome.CANCELED
        except StoreUnavailable:
            log.warning("job %s: could not record failure %s; will be retried", job.id, code)
            return RunOutcome.RETRY
        return RunOutcome.FAILED

    def _delete_quietly(self, refs: list[ImageRef]) -> None:
        for ref in refs:
            try:
                self._blobs.delete(ref.key)
            except Exception:
                log.warning("could not delete orphaned blob %s", ref.key, exc_info=True)
