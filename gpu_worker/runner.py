"""The job runner: claim → generate → store images → finish. The same code serves every queue.

Idempotent by construction: only the caller that wins the queued → running transition
generates, so a duplicate delivery of a claimed or finished job does nothing.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dal.errors import JobNotFound, StoreUnavailable, TransitionConflict
from dal.ports import BlobStore, JobStore
from dal.records import ImageRef, Job, JobChanges, JobError, JobStatus, utcnow
from gpu_worker.generation import GenerationError, GenerationRequest, ImageGenerator
from gpu_worker.progress import JobCanceled, ProgressReporter

log = logging.getLogger(__name__)


class RunOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    # Someone else claimed or finished this job already: nothing done.
    SKIPPED = "skipped"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    progress_write_interval_s: float = 0.5
    cancel_check_interval_s: float = 0.25


def image_key(job: Job, index: int) -> str:
    # The owner appears only as a digest: keys end up in URLs and logs.
    owner_digest = hashlib.sha256(job.owner.encode()).hexdigest()[:16]
    return f"images/{owner_digest}/{job.id}/{index}.png"


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
    ) -> None:
        self._jobs = jobs
        self._blobs = blobs
        self._generator = generator
        self._config = config or RunnerConfig()
        self._clock = clock
        self._monotonic = monotonic

    def run(self, job_id: str) -> RunOutcome:
        try:
            job = self._jobs.transition(
                job_id,
                expected={JobStatus.QUEUED},
                target=JobStatus.RUNNING,
                changes=JobChanges(started_at=self._clock(), increment_attempts=True),
            )
        except JobNotFound:
            log.warning("job %s does not exist; nothing to run", job_id)
            return RunOutcome.NOT_FOUND
        except TransitionConflict as conflict:
            log.info("job %s is %s; not running it again", job_id, conflict.job.status.value)
            return RunOutcome.SKIPPED

        started = self._monotonic()
        try:
            outcome = self._generate_and_store(job)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job_id)
            return self._fail(job, "internal_error", f"unexpected error: {type(exc).__name__}")
        log.info("job %s %s in %.3f s", job_id, outcome.value, self._monotonic() - started)
        return outcome

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
            clock=self._monotonic,
        )
        try:
            images = self._generator.generate(request, on_step=reporter)
        except JobCanceled:
            return RunOutcome.CANCELED
        except GenerationError as exc:
            return self._fail(job, exc.code, exc.message)

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
            return self._fail(job, "storage_unavailable", str(exc))

        try:
            self._jobs.transition(
                job.id,
                expected={JobStatus.RUNNING},
                target=JobStatus.SUCCEEDED,
                changes=JobChanges(progress=1.0, finished_at=self._clock(), images=tuple(refs)),
            )
        except TransitionConflict:
            # Canceled while we were storing: the job is final without these images.
            self._delete_quietly(refs)
            return RunOutcome.CANCELED
        return RunOutcome.SUCCEEDED

    def _fail(self, job: Job, code: str, message: str) -> RunOutcome:
        try:
            self._jobs.transition(
                job.id,
                expected={JobStatus.RUNNING},
                target=JobStatus.FAILED,
                changes=JobChanges(finished_at=self._clock(), error=JobError(code, message)),
            )
        except TransitionConflict:
            return RunOutcome.CANCELED
        return RunOutcome.FAILED

    def _delete_quietly(self, refs: list[ImageRef]) -> None:
        for ref in refs:
            try:
                self._blobs.delete(ref.key)
            except Exception:
                log.warning("could not delete orphaned blob %s", ref.key, exc_info=True)
