"""The job runner on in-memory stores: claim, progress, cancel, failure and idempotency."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from dal.errors import GenerationError, StoreUnavailable
from dal.finisher import JobFinisher
from dal.memory import MemoryBlobStore, MemoryJobStore
from dal.records import Job, JobChanges, JobParams, JobStatus
from dal.url_signing import HmacUrlSigner
from gpu_worker.runner import JobRunner, RunnerConfig, RunOutcome
from tests.contracts.job_store_contract import ManualClock
from tests.fakes import PatternGenerator


class FlakyBlobStore(MemoryBlobStore):
    """Accepts `fail_after` writes, then reports an outage."""

    def __init__(self, fail_after: int) -> None:
        super().__init__(HmacUrlSigner("secret"))
        self.fail_after = fail_after

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        if self.fail_after <= 0:
            raise StoreUnavailable("bucket unreachable")
        self.fail_after -= 1
        super().put(key, data, content_type=content_type)


class ProgressCountingJobStore(MemoryJobStore):
    """Remembers every progress value written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_writes: list[float] = []

    def record_progress(self, job_id: str, progress: float, *, lease_s: float | None = None) -> Job:
        self.progress_writes.append(progress)
        return super().record_progress(job_id, progress, lease_s=lease_s)


def make_job(job_id: str = "job1", steps: int = 4, num_images: int = 1) -> Job:
    return Job(
        id=job_id,
        owner="alice",
        model="pattern",
        params=JobParams(
            prompt="a boat",
            width=64,
            height=64,
            num_inference_steps=steps,
            guidance_scale=1.0,
            seed=42,
            num_images=num_images,
        ),
    )


@pytest.fixture
def jobs() -> MemoryJobStore:
    return MemoryJobStore()


@pytest.fixture
def blobs() -> MemoryBlobStore:
    return MemoryBlobStore(HmacUrlSigner("secret"))


def runner_for(jobs, blobs, generator, **config) -> JobRunner:
    defaults = {"progress_write_interval_s": 0.0, "cancel_check_interval_s": 0.0}
    return JobRunner(
        jobs=jobs, blobs=blobs, generator=generator, config=RunnerConfig(**{**defaults, **config})
    )


class TestJobRunner:
    def test_success_stores_one_png_per_seed_and_finishes(self, jobs, blobs) -> None:
        """A queued job ends succeeded with its images in the blob store."""
        jobs.create(make_job(num_images=3))
        outcome = runner_for(jobs, blobs, PatternGenerator()).run("job1")
        job = jobs.get("job1")
        assert outcome == RunOutcome.SUCCEEDED
        assert job.status == JobStatus.SUCCEEDED
        assert job.progress == 1.0
        assert job.attempts == 1
        assert job.started_at is not None and job.finished_at is not None
        assert [i.seed for i in job.images] == [42, 43, 44]
        assert all(blobs.get(i.key).startswith(b"\x89PNG") for i in job.images)
        assert len(blobs.keys()) == 3

    def test_a_duplicate_delivery_does_nothing(self, jobs, blobs) -> None:
        """Running a finished job again generates nothing and changes nothing."""
        jobs.create(make_job())
        generator = PatternGenerator()
        runner = runner_for(jobs, blobs, generator)
        runner.run("job1")
        before = jobs.get("job1")
        assert runner.run("job1") == RunOutcome.DUPLICATE
        assert len(generator.calls) == 1
        assert jobs.get("job1") == before

    def test_concurrent_deliveries_generate_once(self, jobs, blobs) -> None:
        """Of several threads delivering the same job at once, exactly one generates."""
        jobs.create(make_job())
        generator = PatternGenerator()
        runner = runner_for(jobs, blobs, generator)
        barrier = threading.Barrier(6)
        outcomes: list[RunOutcome] = []

        def deliver() -> None:
            barrier.wait()
            outcomes.append(runner.run("job1"))

        threads = [threading.Thread(target=deliver) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(RunOutcome.SUCCEEDED) == 1
        assert set(outcomes) <= {RunOutcome.SUCCEEDED, RunOutcome.DUPLICATE, RunOutcome.IN_PROGRESS}
        assert len(generator.calls) == 1

    def test_concurrent_duplicates_wait_and_are_all_acknowledged(self, jobs, blobs) -> None:
        """With a duplicate wait, every concurrent delivery ends in an acknowledgeable outcome."""
        jobs.create(make_job(steps=20))
        generator = PatternGenerator()
        runner = runner_for(jobs, blobs, generator, duplicate_wait_s=10, duplicate_poll_s=0.01)
        barrier = threading.Barrier(10)
        outcomes: list[RunOutcome] = []

        def deliver() -> None:
            barrier.wait()
            outcomes.append(runner.run("job1"))

        threads = [threading.Thread(target=deliver) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(RunOutcome.SUCCEEDED) == 1
        assert outcomes.count(RunOutcome.DUPLICATE) == 9
        assert all(o.acknowledge for o in outcomes)
        assert len(generator.calls) == 1

    def test_missing_job_is_not_found(self, jobs, blobs) -> None:
        """A message for a job that does not exist is reported, not retried."""
        assert runner_for(jobs, blobs, PatternGenerator()).run("ghost") == RunOutcome.NOT_FOUND

    def test_progress_is_written_while_generating(self, jobs, blobs) -> None:
        """Progress rises step by step and stays below 1 until the images are stored."""
        jobs.create(make_job(steps=5))
        seen: list[float] = []

        class Watching(PatternGenerator):
            def generate(self, request, on_step=None):
                def watch(step: int, total: int) -> None:
                    assert on_step is not None
                    on_step(step, total)
                    seen.append(jobs.get("job1").progress)

                return super().generate(request, watch)

        runner_for(jobs, blobs, Watching()).run("job1")
        assert seen == sorted(seen)
        assert 0 < seen[0] < seen[-2] < 1

    def test_progress_writes_are_throttled(self, blobs) -> None:
        """With a long write interval, no intermediate progress is written."""
        jobs = ProgressCountingJobStore()
        jobs.create(make_job(steps=20))
        runner_for(jobs, blobs, PatternGenerator(), progress_write_interval_s=60).run("job1")
        assert jobs.progress_writes == []
        assert jobs.get("job1").status == JobStatus.SUCCEEDED

    def test_cancel_during_generation_stops_it_and_stores_nothing(self, jobs, blobs) -> None:
        """A job canceled between steps stops at the next check and leaves no images."""
        jobs.create(make_job(steps=50))
        generator = PatternGenerator()
        generator.step_gate = threading.Event()
        runner = runner_for(jobs, blobs, generator)
        result: list[RunOutcome] = []
        worker = threading.Thread(target=lambda: result.append(runner.run("job1")))
        worker.start()
        assert generator.started.wait(5)
        jobs.transition(
            "job1",
            expected={JobStatus.RUNNING},
            target=JobStatus.CANCELED,
            changes=JobChanges(),
        )
        generator.step_gate.set()
        worker.join(10)
        assert result == [RunOutcome.CANCELED]
        assert jobs.get("job1").status == JobStatus.CANCELED
        assert blobs.keys() == []

    def test_generation_error_fails_the_job_with_its_code(self, jobs, blobs) -> None:
        """A classified generation error becomes the job's machine-readable error."""
        jobs.create(make_job())
        generator = PatternGenerator()
        generator.fail_with = GenerationError("out_of_memory", "CUDA OOM", retryable=True)
        assert runner_for(jobs, blobs, generator).run("job1") == RunOutcome.FAILED
        job = jobs.get("job1")
        assert job.status == JobStatus.FAILED
        assert job.error is not None
        assert (job.error.code, job.error.message) == ("out_of_memory", "CUDA OOM")
        assert job.finished_at is not None

    def test_unexpected_exception_fails_the_job_as_internal_error(self, jobs, blobs) -> None:
        """A bug in generation is recorded as internal_error, never leaving the job running."""
        jobs.create(make_job())

        class Broken(PatternGenerator):
            def generate(self, request, on_step=None):
                raise KeyError("boom")

        assert runner_for(jobs, blobs, Broken()).run("job1") == RunOutcome.FAILED
        error = jobs.get("job1").error
        assert error is not None and error.code == "internal_error"

    def test_blob_outage_fails_the_job_and_removes_partial_images(self, jobs) -> None:
        """If only some images could be stored, none are kept and the job is not succeeded."""
        jobs.create(make_job(num_images=3))
        flaky = FlakyBlobStore(fail_after=2)
        assert runner_for(jobs, flaky, PatternGenerator()).run("job1") == RunOutcome.FAILED
        job = jobs.get("job1")
        assert job.status == JobStatus.FAILED
        assert job.error is not None and job.error.code == "storage_unavailable"
        assert job.images == ()
        assert flaky.keys() == []

    def test_image_keys_hide_the_owner(self, jobs, blobs) -> None:
        """Blob keys carry a digest of the owner, not the owner itself."""
        jobs.create(make_job())
        runner_for(jobs, blobs, PatternGenerator()).run("job1")
        (ref,) = jobs.get("job1").images
        assert "alice" not in ref.key
        assert ref.key.endswith("/job1/0.png")
        assert blobs.signed_url(ref.key, expires_in=timedelta(minutes=1)).url.startswith(
            "/v1/blobs/images/"
        )


class TestRetriesAndLeases:
    def test_transient_failure_releases_the_job_for_a_retry(self, jobs, blobs) -> None:
        """In retry mode a transient error puts the job back to queued with its last error."""
        jobs.create(make_job())
        generator = PatternGenerator()
        generator.fail_with = GenerationError("out_of_memory", "CUDA OOM", retryable=True)
        runner = runner_for(jobs, blobs, generator, retry_transient=True)
        outcome = runner.run("job1")
        assert outcome == RunOutcome.RETRY and not outcome.acknowledge
        job = jobs.get("job1")
        assert job.status == JobStatus.QUEUED
        assert job.lease_expires_at is None
        assert job.error is not None and job.error.code == "out_of_memory"

        generator.fail_with = None
        assert runner.run("job1") == RunOutcome.SUCCEEDED
        job = jobs.get("job1")
        assert (job.status, job.attempts, job.error) == (JobStatus.SUCCEEDED, 2, None)

    def test_permanent_failure_is_acknowledged_even_in_retry_mode(self, jobs, blobs) -> None:
        """A non-retryable error fails the job for good."""
        jobs.create(make_job())
        generator = PatternGenerator()
        generator.fail_with = GenerationError("invalid_parameters", "bad", retryable=False)
        outcome = runner_for(jobs, blobs, generator, retry_transient=True).run("job1")
        assert outcome == RunOutcome.FAILED and outcome.acknowledge

    def test_blob_outage_is_retried_in_retry_mode(self, jobs) -> None:
        """A storage outage is transient: the job is released, not failed."""
        jobs.create(make_job(num_images=2))
        flaky = FlakyBlobStore(fail_after=1)
        runner = runner_for(jobs, flaky, PatternGenerator(), retry_transient=True)
        assert runner.run("job1") == RunOutcome.RETRY
        assert jobs.get("job1").status == JobStatus.QUEUED
        assert flaky.keys() == []
        flaky.fail_after = 10
        assert runner.run("job1") == RunOutcome.SUCCEEDED
        assert len(flaky.keys()) == 2

    def test_a_dead_workers_job_is_taken_over_after_its_lease(self, blobs) -> None:
        """A job left running under an expired lease is claimed again by a redelivery."""
        clock = ManualClock()
        jobs = MemoryJobStore(clock=clock)
        jobs.create(make_job())
        jobs.claim("job1", lease_s=30)  # a worker claims it, then dies
        runner = JobRunner(
            jobs=jobs,
            blobs=blobs,
            generator=PatternGenerator(),
            config=RunnerConfig(lease_s=30, retry_transient=True),
            clock=clock,
        )
        assert runner.run("job1") == RunOutcome.IN_PROGRESS
        clock.advance(31)
        assert runner.run("job1") == RunOutcome.SUCCEEDED
        assert jobs.get("job1").attempts == 2

    def test_dead_letter_fails_a_queued_job_with_its_last_error(self, jobs, blobs) -> None:
        """When the queue gives up, the job ends failed/dead_lettered naming the last error."""
        jobs.create(make_job())
        generator = PatternGenerator()
        generator.fail_with = GenerationError("out_of_memory", "CUDA OOM", retryable=True)
        runner = runner_for(jobs, blobs, generator, retry_transient=True)
        runner.run("job1")
        job = JobFinisher(jobs).dead_letter("job1", "gave up after 5 deliveries")
        assert job is not None and job.status == JobStatus.FAILED
        assert job.error is not None and job.error.code == "dead_lettered"
        assert "out_of_memory" in job.error.message
        # Replaying reopens it, and with the fault gone it succeeds once.
        jobs.reopen_dead_lettered("job1")
        generator.fail_with = None
        assert runner.run("job1") == RunOutcome.SUCCEEDED
        assert runner.run("job1") == RunOutcome.DUPLICATE

    def test_dead_letter_leaves_finished_jobs_alone(self, jobs, blobs) -> None:
        """A late dead letter for a job that succeeded changes nothing."""
        jobs.create(make_job())
        runner = runner_for(jobs, blobs, PatternGenerator())
        runner.run("job1")
        assert JobFinisher(jobs).dead_letter("job1", "late") is None
        assert jobs.get("job1").status == JobStatus.SUCCEEDED
