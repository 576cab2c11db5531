"""The outbox: a job recorded but never published is published by the sweeper after a grace
period, or failed enqueue_failed after the give-up age; sweepers may run side by side."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.job_service import GenerationDefaults, JobRequest, JobService
from api.outbox_sweeper import OutboxSweeper
from api.wiring import Services, build_services
from dal.errors import FailpointTriggered, TransitionConflict
from dal.failpoints import Failpoints
from dal.finisher import JobFinisher
from dal.memory import MemoryJobQueue, MemoryJobStore, MemoryRequestCache
from dal.records import ENQUEUE_FAILED, JobStatus
from dal.settings import Settings
from tests.contracts.job_store_contract import T0, ManualClock, make_job
from tests.fakes import PatternGenerator

GRACE_S = 60
GIVE_UP_S = 900


class Outbox:
    """A job service whose process 'dies' after recording (failpoint), and a sweeper, on
    shared in-memory adapters and one manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.jobs = MemoryJobStore(clock=self.clock)
        self.queue = MemoryJobQueue()
        self.finisher = JobFinisher(self.jobs, clock=self.clock)
        self.sweeper = self.sweeper_of(self.queue)

    def sweeper_of(self, queue: MemoryJobQueue) -> OutboxSweeper:
        return OutboxSweeper(
            self.jobs,
            queue,
            self.finisher,
            grace_s=GRACE_S,
            give_up_s=GIVE_UP_S,
            clock=self.clock,
        )

    def service(
        self, failpoints: Failpoints | None = None, *, enqueued_on_create: bool = False
    ) -> JobService:
        return JobService(
            jobs=self.jobs,
            queue=self.queue,
            cache=MemoryRequestCache(),
            finisher=self.finisher,
            model_id="m",
            defaults=GenerationDefaults(64, 64, 2, 1.0),
            clock=self.clock,
            failpoints=failpoints,
            enqueued_on_create=enqueued_on_create,
        )

    def strand(self, prompt: str = "lost") -> str:
        """Submit through a service that fails right after recording; returns the job id."""
        service = self.service(Failpoints({"after_job_recorded": "error"}))
        with pytest.raises(FailpointTriggered):
            service.submit(owner="alice", request=JobRequest(prompt=prompt))
        (job,) = [
            j
            for j in self.jobs.list_by_owner("alice", limit=100).items
            if j.params.prompt == prompt
        ]
        return job.id


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


class TestSubmit:
    def test_a_published_job_carries_the_marker_and_is_never_swept(self, outbox: Outbox) -> None:
        """submit records, enqueues, then marks: the sweeper has nothing to do."""
        submitted = outbox.service().submit(owner="alice", request=JobRequest(prompt="fine"))
        assert submitted.job.enqueued_at == T0
        assert outbox.jobs.get(submitted.job.id).enqueued_at == T0
        outbox.clock.advance(GIVE_UP_S + 1)
        assert outbox.sweeper.sweep() == []
        assert outbox.queue.pending == [submitted.job.id]

    def test_a_queue_rebuilt_from_the_store_records_the_job_as_enqueued(
        self, outbox: Outbox
    ) -> None:
        """The inline queue re-enqueues every queued job at start, so the job is recorded
        enqueued from the start (no marker write) and a process that dies right after
        recording leaves nothing for the sweeper: its restart runs the job."""
        service = outbox.service(enqueued_on_create=True)
        submitted = service.submit(owner="alice", request=JobRequest(prompt="inline"))
        assert outbox.jobs.get(submitted.job.id).enqueued_at == T0 == submitted.job.created_at
        dying = outbox.service(Failpoints({"after_job_recorded": "error"}), enqueued_on_create=True)
        with pytest.raises(FailpointTriggered):
            dying.submit(owner="alice", request=JobRequest(prompt="dies"))
        outbox.clock.advance(GIVE_UP_S + 1)
        assert outbox.sweeper.sweep() == []
        assert outbox.queue.pending == [submitted.job.id]

    def test_dying_after_recording_leaves_a_queued_job_without_message(
        self, outbox: Outbox
    ) -> None:
        job_id = outbox.strand()
        job = outbox.jobs.get(job_id)
        assert (job.status, job.enqueued_at) == (JobStatus.QUEUED, None)
        assert outbox.queue.pending == []


class TestSweep:
    def test_within_the_grace_period_nothing_happens(self, outbox: Outbox) -> None:
        job_id = outbox.strand()
        outbox.clock.advance(GRACE_S - 1)
        assert outbox.sweeper.sweep() == []
        assert outbox.queue.pending == []
        assert outbox.jobs.get(job_id).enqueued_at is None

    def test_after_the_grace_period_the_job_is_published_and_marked_once(
        self, outbox: Outbox
    ) -> None:
        job_id = outbox.strand()
        outbox.clock.advance(GRACE_S + 1)
        [result] = outbox.sweeper.sweep()
        assert (result.job_id, result.action) == (job_id, "enqueued")
        assert outbox.queue.pending == [job_id]
        job = outbox.jobs.get(job_id)
        assert (job.status, job.enqueued_at) == (JobStatus.QUEUED, outbox.clock.now)
        assert outbox.sweeper.sweep() == []
        assert outbox.queue.pending == [job_id]

    def test_dry_run_reports_and_changes_nothing(self, outbox: Outbox) -> None:
        young, old = outbox.strand("young"), outbox.strand("old")
        outbox.jobs.transition(young, expected={JobStatus.QUEUED}, target=JobStatus.CANCELED)
        outbox.clock.advance(GIVE_UP_S)
        fresh = outbox.strand("fresh")
        outbox.clock.advance(GRACE_S + 1)
        results = outbox.sweeper.sweep(dry_run=True)
        assert [(r.job_id, r.action) for r in results] == [
            (old, "would-fail"),
            (fresh, "would-enqueue"),
        ]
        assert outbox.queue.pending == []
        assert all(outbox.jobs.get(i).status != JobStatus.FAILED for i in (old, fresh))
        assert outbox.jobs.get(fresh).enqueued_at is None

    def test_a_failed_publish_is_retried_on_the_next_pass(self, outbox: Outbox) -> None:
        job_id = outbox.strand()
        outbox.clock.advance(GRACE_S + 1)
        outbox.queue.available = False
        [result] = outbox.sweeper.sweep()
        assert result.action == "skipped"
        assert outbox.jobs.get(job_id).enqueued_at is None
        outbox.queue.available = True
        assert [r.action for r in outbox.sweeper.sweep()] == ["enqueued"]
        assert outbox.queue.pending == [job_id]

    def test_after_the_give_up_age_the_job_fails_visibly_and_is_not_charged(
        self, outbox: Outbox
    ) -> None:
        job_id = outbox.strand()
        outbox.clock.advance(GIVE_UP_S)
        [result] = outbox.sweeper.sweep()
        assert result.action == "failed"
        job = outbox.jobs.get(job_id)
        assert job.status == JobStatus.FAILED
        assert job.error is not None and job.error.code == ENQUEUE_FAILED
        assert job.finished_at == outbox.clock.now
        assert outbox.queue.pending == []
        assert outbox.jobs.count_images_since("alice", T0 - timedelta(days=1)) == 0
        assert outbox.sweeper.sweep() == []

    def test_sweepers_side_by_side_publish_every_job_and_workers_run_each_once(
        self, outbox: Outbox
    ) -> None:
        """Four sweepers at once over 40 stranded jobs: every job is published and marked;
        duplicates reach the queue, and a worker's claim still runs each job once."""
        for i in range(40):
            outbox.jobs.create(make_job(f"job-{i:02d}", created_at=T0 + timedelta(seconds=i)))
        outbox.clock.advance(GRACE_S + 60)
        queues = [MemoryJobQueue() for _ in range(4)]
        sweepers = [outbox.sweeper_of(q) for q in queues]
        barrier = threading.Barrier(len(sweepers))
        errors: list[BaseException] = []

        def run(sweeper: OutboxSweeper) -> None:
            barrier.wait(timeout=10)
            try:
                sweeper.sweep()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in sweepers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        published = [job_id for q in queues for job_id in q.take_all()]
        ids = {f"job-{i:02d}" for i in range(40)}
        assert set(published) == ids
        assert all(outbox.jobs.get(i).enqueued_at is not None for i in ids)
        claimed = []
        for job_id in published:
            try:
                outbox.jobs.claim(job_id, lease_s=60)
            except TransitionConflict:
                continue
            claimed.append(job_id)
        assert sorted(claimed) == sorted(ids)


class TestInTheApiProcess:
    def _services(self, interval_s: float) -> tuple[Services, MemoryJobQueue, ManualClock]:
        settings = Settings(app_env="test", outbox_sweep_interval_s=interval_s)
        services = build_services(settings, generator=PatternGenerator())
        clock = ManualClock(T0 + timedelta(seconds=GRACE_S + 1))
        assert isinstance(services.queue, MemoryJobQueue)
        services.outbox = OutboxSweeper(
            services.jobs,
            services.queue,
            services.core.finisher,
            grace_s=GRACE_S,
            give_up_s=GIVE_UP_S,
            clock=clock,
        )
        services.jobs.create(make_job("stranded", created_at=T0))
        return services, services.queue, clock

    def test_the_lifespan_runs_the_sweeper_in_the_background(self) -> None:
        services, queue, _ = self._services(interval_s=0.05)
        with TestClient(create_app(services=services)):
            deadline = time.monotonic() + 5
            while queue.pending == [] and time.monotonic() < deadline:
                time.sleep(0.02)
        assert queue.pending[:1] == ["stranded"]
        assert services.jobs.get("stranded").enqueued_at is not None

    def test_interval_zero_runs_no_sweeper(self) -> None:
        services, queue, _ = self._services(interval_s=0)
        with TestClient(create_app(services=services)):
            time.sleep(0.3)
        assert queue.pending == []
        assert services.jobs.get("stranded").enqueued_at is None
