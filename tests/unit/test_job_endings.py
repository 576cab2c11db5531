"""Every way a job can end has every side effect of an ending, exactly once (dal/finisher.py).

The paths: the runner's success and failure; the owner's cancel of a queued and of a running
job (the runner then stops without ending it again); a restart that finds a job left running;
a publish that failed at submit; the outbox giving up; the queue's dead letter (the worker's
push endpoint); a replay that could not publish. The side effects, each seen where it lands:

* the `txt2img_jobs_finished_total` counter of the job's status goes up by one;
* one job event on the bus (API processes wake their waiters with it);
* a request waiting on the job (`Prefer: wait`, the event stream) wakes;
* the webhook receiver gets one POST for the job's event;
* a succeeded job is remembered for dedupe; no other is.

Composed as the processes compose it (build_services, build_worker_services), on in-memory
adapters and a local HTTP receiver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api.app import create_app
from api.dead_letter_replay import ActionResult, DeadLetterReplay, select
from api.job_service import JobRequest
from api.job_waits import JobWaits, Wake
from api.outbox_sweeper import OutboxSweeper
from api.wiring import Services, build_services
from dal.core import Core
from dal.errors import EnqueueFailed, GenerationError, QueueUnavailable
from dal.memory import MemoryJobQueue
from dal.ports import JobStore
from dal.records import Job, JobError
from dal.request_keys import finished_job_key
from dal.settings import Settings
from gpu_worker.app import create_worker_app
from gpu_worker.runner import JobRunner, RunnerConfig, RunOutcome
from gpu_worker.wiring import build_worker_services, recover_interrupted_jobs
from tests.contracts.job_store_contract import ManualClock, make_job
from tests.fakes import PatternGenerator
from tests.webhook_receiver import WebhookReceiver, always, running_receiver

OWNER = "alice"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver(always(204)) as server:
        yield server


def posts_for(receiver: WebhookReceiver, job_id: str) -> int:
    with receiver.lock:
        return sum(json.loads(r.body)["id"] == job_id for r in receiver.received)


def finished_total(status: str) -> float:
    return REGISTRY.get_sample_value("txt2img_jobs_finished_total", {"status": status}) or 0.0


class Waiter:
    """A request waiting on a job, on an event loop of its own, registered before the end."""

    def __init__(self, waits: JobWaits, job_id: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.woken: Future[Wake | None] = asyncio.run_coroutine_threadsafe(
            waits.wait(job_id, 10, since=time.monotonic()), self._loop
        )
        # The wait registers before its first await; one round trip later it has run that far.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(5)

    def was_woken(self) -> bool:
        try:
            return self.woken.result(5) is not None
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


@dataclass
class Observed:
    """The side effects one ending had, read from where each lands."""

    finished: dict[str, float]
    events: int
    waiter_woken: bool | None
    webhook_posts: int
    remembered: bool


@dataclass
class Side:
    """One process's core with an observer on its job-event bus."""

    core: Core
    receiver: WebhookReceiver
    waits: JobWaits | None  # None: a process that serves no waiting requests (a worker)
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.core.job_events is not None
        self.core.closers.append(self.core.job_events.subscribe(self.events.append))

    def watch(self, end: Callable[[], object], job_id: str | None = None) -> Observed:
        """Run `end`, which ends the job `job_id` (or returns the id of the job it ended, when
        nobody could know it before), and read every side effect of that ending."""
        before = {status: finished_total(status) for status in STATUSES}
        events_before = len(self.events)
        waiter = Waiter(self.waits, job_id) if self.waits is not None and job_id else None
        returned = end()
        ended = job_id or str(returned)
        job = self.core.jobs.get(ended)
        assert job.status.is_terminal, job
        self._await_webhook(ended)
        return Observed(
            finished={s: finished_total(s) - before[s] for s in STATUSES},
            events=self.events[events_before:].count(ended),
            waiter_woken=waiter.was_woken() if waiter is not None else None,
            webhook_posts=posts_for(self.receiver, ended),
            remembered=self.core.cache.get(finished_job_key(job)) == ended,
        )

    def _await_webhook(self, job_id: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(d.succeeded for d in self.core.jobs.get(job_id).webhook_deliveries):
                return
            time.sleep(0.02)
        raise AssertionError(f"no webhook delivered for {job_id}")


STATUSES = ("succeeded", "failed", "canceled")


def exactly_once(observed: Observed, status: str, *, waiter: bool = True) -> None:
    assert observed.finished == {s: (1.0 if s == status else 0.0) for s in STATUSES}
    assert observed.events == 1
    assert observed.waiter_woken is (True if waiter else None)
    assert observed.webhook_posts == 1
    assert observed.remembered is (status == "succeeded")


def settings() -> Settings:
    return Settings(
        app_env="test",
        bootstrap_api_key=ALICE_KEY,
        bootstrap_api_key_owner=OWNER,
        webhook_backoff_base_s=0.02,
        webhook_backoff_max_s=0.05,
        outbox_sweep_interval_s=0,
    )


ALICE_KEY = "alice-test-key-0123456789"


@dataclass
class Api:
    services: Services
    side: Side
    generator: PatternGenerator
    receiver: WebhookReceiver

    def submit(self) -> str:
        request = JobRequest(
            prompt="a lighthouse", seed=7, num_inference_steps=3, webhook_url=self.receiver.url
        )
        return self.services.job_service.submit(owner=OWNER, request=request).job.id

    def runner(self) -> JobRunner:
        return JobRunner(
            jobs=self.services.jobs,
            blobs=self.services.blobs,
            generator=self.generator,
            finisher=self.services.core.finisher,
            config=RunnerConfig(progress_write_interval_s=0, cancel_check_interval_s=0),
        )


@pytest.fixture
def api(receiver: WebhookReceiver) -> Iterator[Api]:
    generator = PatternGenerator()
    services = build_services(settings(), generator=generator)
    yield Api(services, Side(services.core, receiver, services.job_waits), generator, receiver)
    services.close()


class TestInTheApiProcess:
    def test_the_runner_succeeding(self, api: Api) -> None:
        job_id = api.submit()
        outcomes: list[RunOutcome] = []
        observed = api.side.watch(lambda: outcomes.append(api.runner().run(job_id)), job_id)
        assert outcomes == [RunOutcome.SUCCEEDED]
        exactly_once(observed, "succeeded")

    def test_the_runner_failing(self, api: Api) -> None:
        job_id = api.submit()
        api.generator.fail_with = GenerationError("prompt_rejected", "no", retryable=False)
        observed = api.side.watch(lambda: api.runner().run(job_id), job_id)
        exactly_once(observed, "failed")

    def test_the_owner_canceling_a_queued_job(self, api: Api) -> None:
        job_id = api.submit()
        headers = {"Authorization": f"Bearer {ALICE_KEY}"}
        with TestClient(create_app(services=api.services)) as client:
            observed = api.side.watch(
                lambda: client.delete(f"/v1/jobs/{job_id}", headers=headers), job_id
            )
        exactly_once(observed, "canceled")

    def test_the_owner_canceling_a_running_job_which_the_runner_then_leaves(self, api: Api) -> None:
        job_id = api.submit()
        gate = api.generator.step_gate = threading.Event()
        outcomes: list[RunOutcome] = []
        worker = threading.Thread(target=lambda: outcomes.append(api.runner().run(job_id)))
        worker.start()
        assert api.generator.started.wait(5)

        def cancel_and_let_the_runner_notice() -> None:
            api.services.job_service.cancel(owner=OWNER, job_id=job_id)
            gate.set()
            worker.join(10)

        observed = api.side.watch(cancel_and_let_the_runner_notice, job_id)
        assert outcomes == [RunOutcome.CANCELED]
        exactly_once(observed, "canceled")

    def test_a_restart_failing_a_job_left_running(self, api: Api) -> None:
        job_id = api.submit()
        api.services.jobs.claim(job_id, lease_s=60)  # and then the process stopped
        finisher = api.services.core.finisher
        observed = api.side.watch(
            lambda: recover_interrupted_jobs(api.services.jobs, finisher), job_id
        )
        assert error_code(api.services.jobs.get(job_id)) == "worker_restarted"
        exactly_once(observed, "failed")

    def test_a_publish_failing_at_submit(self, api: Api) -> None:
        """Nobody can be waiting yet (the client has no id), but everything else happens."""
        assert isinstance(api.services.queue, MemoryJobQueue)
        api.services.queue.available = False

        def submit_into_the_outage() -> str:
            with pytest.raises(EnqueueFailed) as refused:
                api.submit()
            return refused.value.job.id

        observed = api.side.watch(submit_into_the_outage)
        exactly_once(observed, "failed", waiter=False)

    def test_the_outbox_giving_up(self, api: Api) -> None:
        clock = ManualClock()
        # Recorded, never published: the API process died in between.
        job = make_job("stranded", created_at=clock(), webhook_url=api.receiver.url)
        api.services.jobs.create(job)
        clock.advance(601)
        sweeper = OutboxSweeper(
            api.services.jobs,
            api.services.queue,
            api.services.core.finisher,
            grace_s=30,
            give_up_s=600,
            clock=clock,
        )
        observed = api.side.watch(sweeper.sweep, job.id)
        assert error_code(api.services.jobs.get(job.id)) == "enqueue_failed"
        exactly_once(observed, "failed")

    def test_a_replay_that_could_not_publish(self, api: Api) -> None:
        """The reopened job ends again (dead-lettered, its letter kept): one more ending, whose
        webhook event the receiver already has, so no second POST."""
        job_id = api.submit()
        tried_and_released(api.services.jobs, job_id, api.services.settings.max_delivery_attempts)
        finisher = api.services.core.finisher
        exactly_once(
            api.side.watch(lambda: finisher.dead_letter(job_id, "gave up"), job_id), "failed"
        )

        def no_broker(job: Job, letter: Letter) -> None:
            raise QueueUnavailable("the broker is down")

        box = Box([Letter(job_id)])
        replay = DeadLetterReplay(
            box=box, jobs=api.services.jobs, finisher=finisher, requeue=no_broker
        )
        chosen = select([job_id], all_=False, older_than_s=None)
        results: list[ActionResult] = []
        again = api.side.watch(lambda: results.extend(replay.replay(chosen)), job_id)
        assert [r.action for r in results] == ["skipped"]
        assert error_code(api.services.jobs.get(job_id)) == "dead_lettered"
        assert box.letters == [Letter(job_id)]
        assert again.finished == {"succeeded": 0.0, "failed": 1.0, "canceled": 0.0}
        assert (again.events, again.waiter_woken, again.webhook_posts) == (1, True, 1)


class TestInTheWorkerProcess:
    """Through the worker's push endpoints, as Pub/Sub calls them."""

    @pytest.fixture
    def worker(self, receiver: WebhookReceiver) -> Iterator[tuple[TestClient, Side]]:
        services = build_worker_services(settings(), generator=PatternGenerator())
        side = Side(services.core, receiver, None)
        with TestClient(create_worker_app(services=services)) as client:
            yield client, side
        services.close()

    def test_a_pushed_job_succeeding(self, worker, receiver: WebhookReceiver) -> None:
        client, side = worker
        job = make_job("pushed", webhook_url=receiver.url)
        side.core.jobs.create(job)
        observed = side.watch(lambda: push(client, "/pubsub/push", job.id), job.id)
        exactly_once(observed, "succeeded", waiter=False)

    def test_a_dead_letter_pushed_from_the_dead_letter_topic(self, worker, receiver) -> None:
        client, side = worker
        job = make_job("doomed", webhook_url=receiver.url)
        side.core.jobs.create(job)
        tried_and_released(side.core.jobs, job.id, side.core.settings.max_delivery_attempts)
        observed = side.watch(lambda: push(client, "/pubsub/dead-letter", job.id), job.id)
        assert error_code(side.core.jobs.get(job.id)) == "dead_lettered"
        exactly_once(observed, "failed", waiter=False)


def tried_and_released(jobs: JobStore, job_id: str, times: int) -> None:
    """The job failed transiently on each of `times` attempts: a dead letter may end it."""
    for _ in range(times):
        jobs.claim(job_id, lease_s=60)
        jobs.release(job_id, error=JobError("out_of_memory", "CUDA OOM"))


def push(client: TestClient, path: str, job_id: str) -> None:
    data = base64.b64encode(json.dumps({"job_id": job_id}).encode()).decode()
    envelope = {
        "message": {
            "data": data,
            "attributes": {"job_id": job_id, "CloudPubSubDeadLetterSourceDeliveryCount": "5"},
            "messageId": f"m-{job_id}",
        },
        "subscription": "projects/p/subscriptions/s",
    }
    assert client.post(path, json=envelope).status_code == 204


def error_code(job: Job) -> str | None:
    return job.error.code if job.error else None


@dataclass(frozen=True)
class Letter:
    job_id: str | None
    message_id: str = "m-1"
    delivery_count: int | None = 5
    source_subscription: str | None = "jobs"

    def age_s(self, now: datetime) -> float | None:
        return None


@dataclass
class Box:
    """A dead-letter box in memory: what is acknowledged leaves it, what is released stays."""

    letters: list[Letter]

    def take_all(self) -> list[Letter]:
        return list(self.letters)

    def acknowledge(self, letters: Iterable[Letter]) -> None:
        done = list(letters)
        self.letters = [letter for letter in self.letters if letter not in done]

    def release(self, letters: Iterable[Letter]) -> None:
        return None
