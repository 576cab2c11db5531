"""The Pub/Sub adapters against the emulator: publishing, pull-mode workers, dead letters."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from dal.errors import GenerationError
from dal.memory import MemoryJobStore
from dal.pubsub import DeadLetterBox, PubSubJobQueue
from dal.pubsub.client import make_publisher, make_subscriber, subscription_path, topic_path
from dal.records import Job, JobParams, JobStatus
from dal.settings import Settings
from gpu_worker.pull import PullWorker
from gpu_worker.wiring import WorkerServices, build_worker_services
from tests.fakes import PatternGenerator
from tests.integration.pubsub_service import pubsub_emulator

__all__ = ["pubsub_emulator"]
PROJECT = "local-project"


def make_job(job_id: str) -> Job:
    return Job(
        id=job_id,
        owner="alice",
        model="pattern",
        params=JobParams("p", 64, 64, 2, 1.0, 1),
    )


@pytest.fixture
def topology(pubsub_emulator: str) -> Iterator[dict[str, str]]:
    """A fresh topic with a pull subscription (dead-lettering after 5) per test."""
    from google.cloud import pubsub_v1

    suffix = uuid.uuid4().hex[:8]
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    names = {
        "topic": topic_path(PROJECT, f"jobs-{suffix}"),
        "dead_topic": topic_path(PROJECT, f"dead-{suffix}"),
        "sub": subscription_path(PROJECT, f"jobs-sub-{suffix}"),
        "dead_sub": subscription_path(PROJECT, f"dead-sub-{suffix}"),
    }
    publisher.create_topic(name=names["topic"])
    publisher.create_topic(name=names["dead_topic"])
    subscriber.create_subscription(
        request={
            "name": names["sub"],
            "topic": names["topic"],
            "ack_deadline_seconds": 10,
            "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}},
            "dead_letter_policy": {
                "dead_letter_topic": names["dead_topic"],
                "max_delivery_attempts": 5,
            },
        }
    )
    subscriber.create_subscription(
        request={"name": names["dead_sub"], "topic": names["dead_topic"]}
    )
    yield names
    subscriber.close()


@pytest.fixture
def worker() -> Iterator[WorkerServices]:
    services = build_worker_services(
        Settings(app_env="test", job_queue="pubsub", progress_write_interval_s=0),
        generator=PatternGenerator(),
    )
    yield services
    services.close()


def wait_until(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


class TestPubSubQueue:
    def test_enqueue_publishes_job_id_and_attributes(self, topology) -> None:
        """A published job arrives with its id in the data and attributes."""
        queue = PubSubJobQueue(make_publisher(), topology["topic"])
        queue.enqueue(make_job("j-attr"))
        subscriber = make_subscriber()
        response = subscriber.pull(subscription=topology["sub"], max_messages=1, timeout=10)
        (received,) = response.received_messages
        assert received.message.data == b'{"job_id":"j-attr"}'
        assert received.message.attributes["job_id"] == "j-attr"
        assert received.message.attributes["model"] == "pattern"
        subscriber.acknowledge(subscription=topology["sub"], ack_ids=[received.ack_id])

    def test_unreachable_pubsub_is_store_unavailable(self, monkeypatch) -> None:
        """Publishing with nothing listening fails fast with QueueUnavailable."""
        from dal.errors import QueueUnavailable
        from emulators.process import free_port

        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
        queue = PubSubJobQueue(make_publisher(), topic_path(PROJECT, "nowhere"), timeout_s=2)
        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            queue.enqueue(make_job("j-down"))
        assert time.monotonic() - started < 10


class TestPullWorker:
    def test_pulled_job_runs_and_is_acknowledged(self, topology, worker) -> None:
        """In pull mode a published job is generated and its message acknowledged."""
        jobs = worker.jobs
        assert isinstance(jobs, MemoryJobStore)
        jobs.create(make_job("j-pull"))
        puller = PullWorker(
            worker,
            subscriber=make_subscriber(),
            jobs_subscription=topology["sub"],
            dead_letter_subscription=None,
            max_in_flight=2,
        )
        puller.start()
        try:
            PubSubJobQueue(make_publisher(), topology["topic"]).enqueue(jobs.get("j-pull"))
            wait_until(lambda: jobs.get("j-pull").status == JobStatus.SUCCEEDED)
        finally:
            puller.stop()
        assert DeadLetterBox(make_subscriber(), topology["dead_sub"]).take_all() == []

    def test_transient_failures_are_nacked_until_dead_lettered(self, topology, worker) -> None:
        """A job failing transiently is redelivered, then dead-lettered and marked so."""
        jobs = worker.jobs
        generator = worker.generator
        assert isinstance(generator, PatternGenerator)
        generator.fail_with = GenerationError("out_of_memory", "OOM", retryable=True)
        jobs.create(make_job("j-doomed"))
        puller = PullWorker(
            worker,
            subscriber=make_subscriber(),
            jobs_subscription=topology["sub"],
            dead_letter_subscription=topology["dead_sub"],
            max_in_flight=1,
        )
        puller.start()
        try:
            PubSubJobQueue(make_publisher(), topology["topic"]).enqueue(jobs.get("j-doomed"))
            wait_until(lambda: jobs.get("j-doomed").status == JobStatus.FAILED, timeout=60)
        finally:
            puller.stop()
        job = jobs.get("j-doomed")
        assert job.error is not None and job.error.code == "dead_lettered"
        assert job.attempts == 5
