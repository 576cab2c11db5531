"""Recovery driven by the job store (api/job_recovery.py): a job whose worker died or whose
message was lost is handed to the queue again, a bounded number of times, then failed through
the finisher; a live worker keeps its job by its heartbeat, whatever the pipeline does."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.job_recovery import JobRecovery, RecoveryPolicy
from dal.finisher import JobFinisher
from dal.memory import MemoryBlobStore, MemoryJobQueue, MemoryJobStore
from dal.records import JobStatus, utcnow
from dal.requeue import lease_lapsed
from dal.settings import Settings
from dal.url_signing import HmacUrlSigner
from gpu_worker.app import create_worker_app
from gpu_worker.runner import JobRunner, RunnerConfig, RunOutcome
from gpu_worker.wiring import build_worker_services
from tests.contracts.job_store_contract import T0, ManualClock, make_job
from tests.fakes import PatternGenerator
from tests.unit.test_job_endings import push


class Harness:
    def __init__(self, **policy: float) -> None:
        self.clock = ManualClock()
        self.jobs = MemoryJobStore(clock=self.clock)
        self.queue = MemoryJobQueue()
        self.ended: list[tuple[str, str]] = []
        self.finisher = JobFinisher(self.jobs, clock=self.clock)
        self.finisher.add_handler("seen", lambda job: self.ended.append((job.id, job.status)))
        self.recovery = JobRecovery(
            self.jobs,
            self.queue,
            self.finisher,
            RecoveryPolicy(**policy),  # type: ignore[arg-type]
            clock=self.clock,
        )

    def running(self, job_id: str, *, lease_s: float = 30) -> None:
        self.jobs.create(make_job(job_id))
        self.jobs.mark_enqueued(job_id, at=self.clock())
        self.jobs.claim(job_id, lease_s=lease_s)


@pytest.fixture
def h() -> Harness:
    return Harness()


class TestDeadWorkers:
    def test_a_job_under_a_live_lease_is_left_alone(self, h: Harness) -> None:
        h.running("j")
        h.clock.advance(29)
        assert h.recovery.recover() == []
        assert h.jobs.get("j").status == JobStatus.RUNNING
        assert h.queue.take_all() == []

    def test_a_lapsed_lease_puts_the_job_back_on_the_queue(self, h: Harness) -> None:
        h.running("j")
        now = h.clock.advance(31)
        (result,) = h.recovery.recover()
        assert result.action == "taken-back"
        job = h.jobs.get("j")
        assert (job.status, job.handovers, job.enqueued_at) == (JobStatus.QUEUED, 1, now)
        assert job.error is not None and job.error.code == "lease_expired"
        assert h.queue.take_all() == ["j"]
        # The next worker claims it as its second attempt.
        assert h.jobs.claim("j", lease_s=30).attempts == 2
        assert h.ended == []

    def test_a_job_that_keeps_losing_its_worker_is_failed_after_the_last_attempt(
        self, h: Harness
    ) -> None:
        h.running("j")
        for _ in range(4):  # attempts 1..4 each end with a dead worker
            h.clock.advance(31)
            assert [r.action for r in h.recovery.recover()] == ["taken-back"]
            h.jobs.claim("j", lease_s=30)
        h.clock.advance(31)
        (result,) = h.recovery.recover()
        assert result.action == "failed"
        job = h.jobs.get("j")
        assert job.status == JobStatus.FAILED and job.error is not None
        assert job.error.code == "lease_expired"
        assert h.ended == [("j", JobStatus.FAILED)]

    def test_a_dry_run_changes_nothing(self, h: Harness) -> None:
        h.running("j")
        h.clock.advance(31)
        before = h.jobs.get("j")
        assert [r.action for r in h.recovery.recover(dry_run=True)] == ["would-take-back"]
        assert h.jobs.get("j") == before and h.queue.take_all() == []

    def test_a_publish_failure_leaves_the_job_for_the_next_hand_over(self, h: Harness) -> None:
        h.running("j")
        h.clock.advance(31)
        h.queue.available = False
        assert [r.action for r in h.recovery.recover()] == ["skipped"]
        h.queue.available = True
        h.clock.advance(30)
        assert [r.action for r in h.recovery.recover()] == ["handed-over"]
        assert h.queue.take_all() == ["j"]


class TestLostMessages:
    def test_hand_overs_of_an_unclaimed_job_space_out_then_stop(self, h: Harness) -> None:
        h.jobs.create(make_job("j"))
        h.jobs.mark_enqueued("j", at=h.clock())
        published_at = []
        for _ in range(1200):
            h.clock.advance(10)
            if h.recovery.recover():
                published_at.append((h.clock() - T0).total_seconds())
            if h.jobs.get("j").status != JobStatus.QUEUED:
                break
        # Every 30 s four times, then twice as long each time, at most 10 minutes; the 21st
        # time it is failed.
        gaps = [b - a for a, b in zip([0.0, *published_at], published_at, strict=False)]
        assert gaps[:10] == [30, 30, 30, 30, 60, 120, 240, 480, 600, 600]
        assert len(published_at) == 21
        job = h.jobs.get("j")
        assert job.status == JobStatus.FAILED and job.error is not None
        assert (job.error.code, job.handovers) == ("not_started", 20)
        assert len(h.queue.take_all()) == 20
        assert h.ended == [("j", JobStatus.FAILED)]

    def test_a_job_never_handed_to_the_queue_is_left_to_the_outbox(self, h: Harness) -> None:
        h.jobs.create(make_job("j"))
        h.clock.advance(3600)
        assert h.recovery.recover() == []

    def test_a_claimed_job_is_not_handed_over(self, h: Harness) -> None:
        h.running("j")
        h.clock.advance(20)
        assert h.recovery.recover() == []


class TestHeartbeat:
    def test_a_worker_keeps_its_job_through_a_step_longer_than_its_lease(self) -> None:
        """The lease is renewed by time, not by diffusion steps: a pipeline stuck in one long
        step (or decoding, or uploading) for three leases keeps its job."""
        jobs = MemoryJobStore()
        jobs.create(make_job("j"))
        generator = PatternGenerator()
        generator.step_gate = threading.Event()
        runner = JobRunner(
            jobs=jobs,
            blobs=MemoryBlobStore(HmacUrlSigner("secret")),
            generator=generator,
            config=RunnerConfig(lease_s=0.6, heartbeat_s=0.1, progress_write_interval_s=60),
        )
        outcome: list[RunOutcome] = []
        worker = threading.Thread(target=lambda: outcome.append(runner.run("j")))
        worker.start()
        assert generator.started.wait(5)
        recovery = JobRecovery(jobs, MemoryJobQueue(), JobFinisher(jobs), RecoveryPolicy())
        lapsed = []
        stop = threading.Event()

        def sweep() -> None:
            while not stop.wait(0.05):
                lapsed.extend(recovery.recover())

        sweeper = threading.Thread(target=sweep)
        sweeper.start()
        stop.wait(1.8)  # three leases, no step done
        stop.set()
        sweeper.join()
        generator.step_gate.set()
        worker.join(10)
        assert lapsed == []
        assert outcome == [RunOutcome.SUCCEEDED]

    def test_the_lease_runs_out_once_the_worker_stops_beating(self) -> None:
        clock = ManualClock()
        jobs = MemoryJobStore(clock=clock)
        jobs.create(make_job("j"))
        jobs.claim("j", lease_s=30)
        clock.advance(10)
        jobs.record_progress("j", 0.0, lease_s=30)  # the last heartbeat before the kill
        assert jobs.get("j").lease_expires_at == T0 + timedelta(seconds=40)


def test_a_delivery_of_a_job_another_worker_runs_is_acknowledged() -> None:
    """Refusing it would only back the subscription off; the sweeper owns recovery."""
    assert RunOutcome.IN_PROGRESS.acknowledge
    assert not RunOutcome.RETRY.acknowledge


class TestTheQueueGivesUpWhileTheLeaseIsLive:
    def test_the_job_is_taken_back_once_the_lease_lapses_and_succeeds(self) -> None:
        """The worker died holding the job; Pub/Sub dead-letters its message while the lease is
        still live, so the dead-letter recorder leaves it alone. Once the lease lapses the sweep
        hands it back, the next delivery runs it, and its owner has nothing in flight."""
        services = build_worker_services(
            Settings(app_env="test", job_queue="pubsub"), generator=PatternGenerator()
        )
        queue = MemoryJobQueue()
        recovery = JobRecovery(services.jobs, queue, services.finisher, RecoveryPolicy())
        try:
            with TestClient(create_worker_app(services=services)) as client:
                services.jobs.create(make_job("j"))
                services.jobs.claim("j", lease_s=0.5)  # its worker died right after
                push(client, "/pubsub/dead-letter", "j")
                assert services.jobs.get("j").status == JobStatus.RUNNING
                assert recovery.recover() == []  # the lease is live

                deadline = time.monotonic() + 5
                while not lease_lapsed(services.jobs.get("j"), utcnow()):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                assert [r.action for r in recovery.recover()] == ["taken-back"]
                assert queue.take_all() == ["j"]
                push(client, "/pubsub/push", "j")
            job = services.jobs.get("j")
            assert (job.status, job.attempts, job.handovers) == (JobStatus.SUCCEEDED, 2, 1)
            assert services.jobs.count_in_flight(job.owner) == 0
        finally:
            services.close()
