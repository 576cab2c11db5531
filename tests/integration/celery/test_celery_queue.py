"""The Celery adapters against a real Redis and a real Celery worker (threads pool, in this
process): publishing, running through WorkerServices, retries, leases, dead letters, replay."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from api.admin_cli import main as admin_main
from api.dead_letter_replay import build_replay, select
from api.job_recovery import JobRecovery, RecoveryPolicy
from dal.celery import (
    TASK_NAME,
    CeleryDeadLetterBox,
    CeleryJobQueue,
    make_celery_app,
    retry_countdown,
)
from dal.celery.app import key_prefix
from dal.errors import GenerationError, QueueUnavailable
from dal.ports import JobStore
from dal.records import Job, JobError, JobParams, JobStatus, utcnow
from dal.redis.client import make_redis_client
from dal.requeue import lease_lapsed
from dal.settings import Settings
from dal.trace_context import set_traceparent
from emulators.process import free_port
from tests.integration.celery.conftest import celery_settings
from tests.integration.postgres_service import empty_postgres_url

__all__ = ["empty_postgres_url"]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def make_job(job_id: str) -> Job:
    return Job(id=job_id, owner="alice", model="pattern", params=JobParams("p", 64, 64, 2, 1.0, 1))


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def wait_for_status(jobs: JobStore, job_id: str, *statuses: JobStatus, timeout: float = 30) -> Job:
    wait_until(lambda: jobs.get(job_id).status in statuses, timeout, f"job {job_id} {statuses}")
    return jobs.get(job_id)


@pytest.fixture
def publisher() -> Iterator[Callable[[Settings], CeleryJobQueue]]:
    """The API's side: a Celery app that knows no task, publishing by name."""
    apps: list[Any] = []

    def make(settings: Settings) -> CeleryJobQueue:
        app = make_celery_app(settings)
        apps.append(app)
        return CeleryJobQueue(app, queue=settings.celery_queue)

    yield make
    for app in apps:
        app.close()


@pytest.fixture(params=["memory", "postgres"])
def store_settings(request: pytest.FixtureRequest, redis_url: str) -> Settings:
    """Settings on the memory job store, or on a fresh PostgreSQL database."""
    if request.param == "memory":
        return celery_settings(redis_url)
    url = request.getfixturevalue("empty_postgres_url")
    return celery_settings(redis_url, job_store="sql", database_url=url)


def redis_client(settings: Settings) -> Any:
    return make_redis_client(settings.redis_url)


def queue_depths(settings: Settings) -> tuple[int, int]:
    """(tasks waiting in the queue, tasks handed out and not acknowledged)."""
    client = redis_client(settings)
    try:
        prefix = key_prefix(settings)
        return int(client.llen(prefix + settings.celery_queue)), int(
            client.hlen(prefix + "unacked")
        )
    finally:
        client.close()


def dead_letters(settings: Settings) -> CeleryDeadLetterBox:
    return CeleryDeadLetterBox(redis_client(settings), settings.celery_dead_letter_key)


class TestPublishing:
    def test_enqueue_sends_the_named_task_with_job_id_and_trace_context(
        self, redis_url: str, publisher: Callable[[Settings], CeleryJobQueue]
    ) -> None:
        """The message on the queue's Redis list names txt2img.run_job, carries the job id as
        its argument and the request's traceparent as a keyword argument."""
        settings = celery_settings(redis_url)
        set_traceparent(TRACEPARENT)
        try:
            publisher(settings).enqueue(make_job("j-message"))
        finally:
            set_traceparent(None)
        client = redis_client(settings)
        try:
            key = key_prefix(settings) + settings.celery_queue
            (raw,) = client.lrange(key, 0, -1)
            client.delete(key)
        finally:
            client.close()
        message = json.loads(raw)
        assert message["headers"]["task"] == TASK_NAME
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert args == ["j-message"]
        assert kwargs == {"traceparent": TRACEPARENT}
        assert message["properties"]["delivery_info"]["routing_key"] == settings.celery_queue

    def test_broker_down_is_queue_unavailable_fast(self, redis_url: str) -> None:
        """With nothing listening at the broker's address, enqueue fails within seconds."""
        settings = celery_settings(
            redis_url, celery_broker_url=f"redis://127.0.0.1:{free_port()}/0"
        )
        app = make_celery_app(settings)
        try:
            started = time.monotonic()
            with pytest.raises(QueueUnavailable):
                CeleryJobQueue(app).enqueue(make_job("j-down"))
            assert time.monotonic() - started < 5
        finally:
            app.close()

    def test_retry_countdown_grows_with_jitter_and_stays_under_the_visibility_timeout(
        self,
    ) -> None:
        """Exponential from the base, between half and all of it, capped by the maximum and
        by half the visibility timeout."""
        low = [
            retry_countdown(
                n, base_s=10, max_s=600, visibility_timeout_s=3600, random_fraction=lambda: 0.0
            )
            for n in range(1, 9)
        ]
        high = [
            retry_countdown(
                n, base_s=10, max_s=600, visibility_timeout_s=3600, random_fraction=lambda: 1.0
            )
            for n in range(1, 9)
        ]
        assert high == [10, 20, 40, 80, 160, 320, 600, 600]
        assert low == [h / 2 for h in high]
        assert (
            retry_countdown(
                9, base_s=10, max_s=600, visibility_timeout_s=60, random_fraction=lambda: 1.0
            )
            == 30
        )


class TestWorker:
    def test_published_job_runs_once_and_succeeds(
        self,
        store_settings: Settings,
        publisher: Callable[[Settings], CeleryJobQueue],
        make_worker: Callable[[Settings], Any],
    ) -> None:
        """API publishes → Celery worker → WorkerServices.run_job → succeeded, acknowledged."""
        with make_worker(store_settings) as worker:
            jobs = worker.services.jobs
            job = jobs.create(make_job("j-ok"))
            publisher(store_settings).enqueue(job)
            done = wait_for_status(jobs, "j-ok", JobStatus.SUCCEEDED, JobStatus.FAILED)
            assert done.status == JobStatus.SUCCEEDED, done
            assert done.attempts == 1
            assert len(done.images) == 1
            assert worker.services.blobs.exists(done.images[0].key)
            assert len(worker.generator.calls) == 1
            wait_until(lambda: queue_depths(store_settings) == (0, 0), what="queue drained")

    def test_ten_deliveries_of_one_job_generate_once(
        self,
        redis_url: str,
        publisher: Callable[[Settings], CeleryJobQueue],
        make_worker: Callable[[Settings], Any],
    ) -> None:
        """Ten tasks for one job: one claim, one generation, every task acknowledged."""
        settings = celery_settings(redis_url)
        with make_worker(settings) as worker:
            jobs = worker.services.jobs
            jobs.create(make_job("j-ten"))
            queue = publisher(settings)
            for _ in range(10):
                queue.publish("j-ten")
            wait_for_status(jobs, "j-ten", JobStatus.SUCCEEDED)
            wait_until(lambda: queue_depths(settings) == (0, 0), what="every task acknowledged")
            assert jobs.get("j-ten").attempts == 1
            assert len(worker.generator.calls) == 1
            assert dead_letters(settings).take_all() == []

    def test_a_live_lease_is_acknowledged_and_the_sweep_takes_the_job_back_once_it_lapses(
        self,
        redis_url: str,
        publisher: Callable[[Settings], CeleryJobQueue],
        make_worker: Callable[[Settings], Any],
    ) -> None:
        """A task for a job another (dead) worker holds is acknowledged, not retried: the job
        store owns recovery. Once the lease lapses, the sweep hands the job back to the queue
        and it succeeds on its second attempt."""
        settings = celery_settings(redis_url)
        with make_worker(settings) as worker:
            jobs = worker.services.jobs
            jobs.create(make_job("j-lease"))
            jobs.claim("j-lease", lease_s=1.0)  # a worker that died right after its claim
            queue = publisher(settings)
            queue.enqueue(jobs.get("j-lease"))
            wait_until(lambda: queue_depths(settings) == (0, 0), what="the task acknowledged")
            assert jobs.get("j-lease").status == JobStatus.RUNNING
            recovery = JobRecovery(jobs, queue, worker.services.finisher, RecoveryPolicy())
            wait_until(lambda: lease_lapsed(jobs.get("j-lease"), utcnow()), what="lease lapsed")
            assert [r.action for r in recovery.recover()] == ["taken-back"]
            done = wait_for_status(jobs, "j-lease", JobStatus.SUCCEEDED, JobStatus.FAILED)
            assert done.status == JobStatus.SUCCEEDED, done
            assert (done.attempts, done.handovers) == (2, 1)
            assert len(worker.generator.calls) == 1
            assert dead_letters(settings).take_all() == []


class TestDeadLetters:
    def test_transient_failures_dead_letter_after_max_attempts_then_replay_succeeds(
        self,
        store_settings: Settings,
        publisher: Callable[[Settings], CeleryJobQueue],
        make_worker: Callable[[Settings], Any],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A job failing transiently every time ends failed/dead_lettered after exactly
        MAX_DELIVERY_ATTEMPTS deliveries, its task on the dead-letter list; once the fault is
        gone, a replay runs it to success once."""
        settings = store_settings
        attempts = settings.max_delivery_attempts
        with make_worker(settings) as worker:
            jobs = worker.services.jobs
            worker.generator.fail_with = GenerationError("out_of_memory", "OOM", retryable=True)
            jobs.create(make_job("j-doomed"))
            publisher(settings).enqueue(jobs.get("j-doomed"))
            job = wait_for_status(jobs, "j-doomed", JobStatus.FAILED, JobStatus.SUCCEEDED)
            assert job.status == JobStatus.FAILED
            assert job.error is not None and job.error.code == "dead_lettered"
            assert "out_of_memory" in job.error.message
            assert job.attempts == attempts
            assert len(worker.generator.calls) == attempts
            wait_until(lambda: queue_depths(settings) == (0, 0), what="queue drained")
            (letter,) = dead_letters(settings).take_all()
            assert letter.job_id == "j-doomed"
            assert letter.delivery_count == attempts
            assert letter.source_subscription == settings.celery_queue
            assert "out_of_memory" in letter.last_error

            worker.generator.fail_with = None
            if settings.job_store == "sql":
                # Through the operator's command, on the same database and Redis.
                assert admin_main(["dead-letters", "list"], settings) == 0
                row = next(
                    line
                    for line in capsys.readouterr().out.splitlines()
                    if line.startswith("j-doomed")
                )
                assert row.split("\t")[1:3] == [str(attempts), settings.celery_queue]
                assert (
                    admin_main(
                        ["dead-letters", "replay", "--job", "j-doomed", "--dry-run"], settings
                    )
                    == 0
                )
                assert "would-replay\tj-doomed" in capsys.readouterr().out
                assert jobs.get("j-doomed").status == JobStatus.FAILED
                assert admin_main(["dead-letters", "replay", "--job", "j-doomed"], settings) == 0
                assert "replayed\tj-doomed" in capsys.readouterr().out
            else:
                # The worker's own in-memory store, with closers of the replay's own.
                core = dataclasses.replace(worker.services.core, closers=[])
                replay = build_replay(core)
                try:
                    (result,) = replay.replay(select(["j-doomed"], all_=False, older_than_s=None))
                    assert result.action == "replayed"
                finally:
                    core.close()

            job = wait_for_status(jobs, "j-doomed", JobStatus.SUCCEEDED, JobStatus.FAILED)
            assert job.status == JobStatus.SUCCEEDED, job
            assert job.attempts == attempts + 1
            assert len(worker.generator.calls) == attempts + 1
            assert dead_letters(settings).take_all() == []

    def test_a_task_whose_worker_keeps_dying_is_dead_lettered_without_running(
        self,
        redis_url: str,
        make_worker: Callable[[Settings], Any],
    ) -> None:
        """A task delivered MAX_DELIVERY_ATTEMPTS times already (each time its worker was
        killed) is not run again: the job is dead-lettered."""
        settings = celery_settings(redis_url)
        with make_worker(settings) as worker:
            jobs = worker.services.jobs
            jobs.create(make_job("j-poison"))
            for _ in range(settings.max_delivery_attempts):
                # Each delivery's worker claimed the job and was killed; each lease long
                # expired by the time the task comes back (a live lease is another worker's,
                # which the finisher's dead_letter rightly leaves alone).
                jobs.claim("j-poison", lease_s=0.01)
                wait_until(
                    lambda: lease_lapsed(jobs.get("j-poison"), utcnow()), 5, "the lease lapsed"
                )
            counter = key_prefix(settings) + "deliveries:task-poison"
            client = redis_client(settings)
            try:
                client.set(counter, settings.max_delivery_attempts)
            finally:
                client.close()
            worker.app.send_task(
                TASK_NAME, args=["j-poison"], task_id="task-poison", queue=settings.celery_queue
            )
            job = wait_for_status(jobs, "j-poison", JobStatus.FAILED, JobStatus.SUCCEEDED)
            assert job.error is not None and job.error.code == "dead_lettered"
            assert "worker stopped" in job.error.message
            assert worker.generator.calls == []
            (letter,) = dead_letters(settings).take_all()
            assert (letter.job_id, letter.task_id) == ("j-poison", "task-poison")
            assert letter.delivery_count == settings.max_delivery_attempts

    def test_purge_drops_letters_and_leaves_jobs_failed(
        self, redis_url: str, make_worker: Callable[[Settings], Any]
    ) -> None:
        """Purging removes the selected letters only; a letter that is not JSON is listed
        (with no job) and can be purged too."""
        settings = celery_settings(redis_url)
        with make_worker(settings) as worker:
            jobs = worker.services.jobs
            box = dead_letters(settings)
            for job_id in ("j-a", "j-b"):
                jobs.create(make_job(job_id))
                for _ in range(settings.max_delivery_attempts):  # each attempt failed
                    jobs.claim(job_id, lease_s=60)
                    jobs.release(job_id, error=JobError("out_of_memory", "CUDA OOM"))
                worker.runtime.services.finisher.dead_letter(job_id, "test")
                box.add(
                    job_id=job_id,
                    task_id=f"t-{job_id}",
                    attempts=5,
                    queue=settings.celery_queue,
                    last_error="x",
                    at=jobs.get(job_id).finished_at or jobs.get(job_id).created_at,
                )
            client = redis_client(settings)
            try:
                client.rpush(settings.celery_dead_letter_key, "not json")
            finally:
                client.close()
            core = dataclasses.replace(worker.services.core, closers=[])
            replay = build_replay(core)
            try:
                assert [r.job_id for r in replay.rows()] == ["j-a", "j-b", None]
                dry = replay.purge(select(["j-a"], all_=False, older_than_s=None), dry_run=True)
                assert [(r.action, r.job_id) for r in dry] == [("would-purge", "j-a")]
                assert len(box.take_all()) == 3
                done = replay.purge(select(["j-a"], all_=False, older_than_s=None))
                assert [(r.action, r.job_id) for r in done] == [("purged", "j-a")]
                assert [letter.job_id for letter in box.take_all()] == ["j-b", None]
                replay.purge(select([], all_=True, older_than_s=None))
                assert box.take_all() == []
            finally:
                core.close()
            assert jobs.get("j-a").status == JobStatus.FAILED
