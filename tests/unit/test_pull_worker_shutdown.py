"""The pull worker (GKE, VMs) stops the way a Kubernetes rollout or scale-in needs: it stops
pulling, lets its running jobs finish and acknowledge for up to SHUTDOWN_GRACE_S, and only then
closes the model and the stores. Before, it cancelled its streams without waiting and closed
the model under the running jobs. Pub/Sub's streams are stand-ins that run callbacks on
threads, as the client library does."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, cast

import pytest

from dal.settings import Settings
from gpu_worker.pull import PullWorker
from gpu_worker.runner import RunOutcome


class Message:
    """The parts of a streaming-pull Message the worker uses."""

    def __init__(self, job_id: str) -> None:
        self.message_id = f"m-{job_id}"
        self.data = json.dumps({"job_id": job_id}).encode()
        self.attributes = {"job_id": job_id}
        self.delivery_attempt = 1
        self.answers: list[str] = []

    def ack(self) -> None:
        self.answers.append("ack")

    def nack(self) -> None:
        self.answers.append("nack")


class Stream:
    """A StreamingPullFuture whose one message is being handled when the worker stops. As in
    google-cloud-pubsub, result() after cancel() waits for running callbacks only when the
    stream was opened with await_callbacks_on_shutdown=True."""

    def __init__(self, callback: Any, message: Message, await_callbacks: bool) -> None:
        self.await_callbacks = await_callbacks
        self.timeouts: list[float | None] = []
        self._thread = threading.Thread(target=callback, args=(message,), daemon=True)
        self._thread.start()

    def cancel(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        if self.await_callbacks:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError
        return True

    def join(self) -> None:
        self._thread.join(10)


class Subscriber:
    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.messages: list[Message] = []

    def subscribe(
        self,
        subscription: str,
        callback: Any,
        *,
        flow_control: Any,
        await_callbacks_on_shutdown: bool = False,
    ) -> Stream:
        message = Message(f"job-{len(self.messages)}")
        self.messages.append(message)
        self.streams.append(Stream(callback, message, await_callbacks_on_shutdown))
        return self.streams[-1]


class SlowServices:
    """WorkerServices whose job runs until `finish` is set (or `seconds` pass)."""

    def __init__(self, seconds: float, settings: Settings | None = None) -> None:
        self.settings = settings
        self.finisher = self
        self.started = threading.Event()
        self.finish = threading.Event()
        self._seconds = seconds

    def run_job(self, job_id: str) -> RunOutcome:
        self.started.set()
        self.finish.wait(self._seconds)
        return RunOutcome.SUCCEEDED

    def dead_letter(self, job_id: str, detail: object) -> None:
        """The finisher's: the dead-letter stream's message is recorded at once."""


def puller(services: SlowServices, subscriber: Subscriber, **kwargs: Any) -> PullWorker:
    return PullWorker(
        cast(Any, services),
        subscriber=subscriber,
        jobs_subscription="projects/p/subscriptions/jobs-worker-pull",
        dead_letter_subscription=None,
        max_in_flight=1,
        **kwargs,
    )


def test_a_stopping_worker_lets_its_running_job_finish_and_acknowledge() -> None:
    """On SIGTERM (uvicorn's shutdown) the pull worker waits for the job it is running, which
    acknowledges, before the model and stores are closed."""
    services, subscriber = SlowServices(seconds=0.5), Subscriber()
    worker = puller(services, subscriber)
    worker.start()
    assert services.started.wait(5)
    worker.stop()
    (message,) = subscriber.messages
    assert message.answers == ["ack"], (
        "stop() returned while the job was still running: the worker closes the model under it"
    )


def test_a_stopping_worker_waits_no_longer_than_the_shutdown_grace() -> None:
    """A job that outlasts SHUTDOWN_GRACE_S is left to redelivery: stop() returns in time for
    the model to close before the kubelet's SIGKILL."""
    services, subscriber = SlowServices(seconds=30), Subscriber()
    worker = puller(services, subscriber, shutdown_grace_s=0.3)
    worker.start()
    assert services.started.wait(5)
    started = time.monotonic()
    try:
        worker.stop()
        assert time.monotonic() - started < 5
        assert subscriber.messages[0].answers == []
    finally:
        services.finish.set()
        subscriber.streams[0].join()


def test_the_pull_worker_gets_shutdown_grace_s_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """python -m gpu_worker --pull waits SHUTDOWN_GRACE_S, the value the manifest sets."""
    import dal.pubsub.client
    from gpu_worker.app import _start_pull_worker

    subscriber = Subscriber()
    monkeypatch.setattr(dal.pubsub.client, "make_subscriber", lambda: subscriber)
    settings = Settings(
        app_env="test",
        gcp_project="p",
        pubsub_jobs_subscription="jobs-worker-pull",
        pubsub_dead_letter_recorder_subscription="jobs-dead-letter-recorder-pull",
        shutdown_grace_s=0.25,
    )
    services = SlowServices(seconds=30, settings=settings)
    worker = _start_pull_worker(cast(Any, services))
    try:
        worker.stop()
    finally:
        services.finish.set()
        for stream in subscriber.streams:
            stream.join()
    assert subscriber.streams
    for stream in subscriber.streams:
        assert stream.await_callbacks, "stopping does not wait for the running jobs"
        assert stream.timeouts and all(t is not None and t <= 0.25 for t in stream.timeouts), (
            f"stop() waited {stream.timeouts}, not SHUTDOWN_GRACE_S=0.25"
        )
