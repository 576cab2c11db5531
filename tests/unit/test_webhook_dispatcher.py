"""The webhook dispatcher: one attempt at a time, recorded on the job; retries on no answer,
429 and 5xx with backoff; stops after a 2xx or the last attempt; redrives what a stopped
process left owed. Jobs live in the in-memory store; requests go to a recording sender, or,
for the threaded path, to a real HTTP server on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from dal.errors import SendFailed
from dal.memory import MemoryJobStore
from dal.records import Job, JobChanges, JobError, JobStatus, WebhookDelivery
from dal.webhooks.dispatcher import RedriveConfig, WebhookDispatcher
from dal.webhooks.retry import RetryPolicy, is_retryable
from dal.webhooks.sender import HttpxSender
from dal.webhooks.signing import owner_secret, verify
from dal.webhooks.urls import WebhookUrlPolicy
from tests.contracts.job_store_contract import T0, ManualClock, make_job
from tests.webhook_fakes import RecordingSender
from tests.webhook_receiver import WebhookReceiver, failing_first, running_receiver

MASTER = "master-secret-for-tests-0123456789"
HOOK = "http://127.0.0.1:9/hook"


def secret_for(owner: str) -> str:
    return owner_secret(MASTER, owner)


def render(job: Job) -> bytes:
    return json.dumps({"id": job.id, "status": job.status.value}).encode()


class Harness:
    def __init__(self, *answers: int | Exception, max_attempts: int = 4) -> None:
        self.clock = ManualClock()
        self.jobs = MemoryJobStore(clock=self.clock)
        self.sender = RecordingSender(answers=list(answers))
        self.sleeps: list[float] = []
        self.retry = RetryPolicy(
            max_attempts=max_attempts, base_s=1.0, max_s=5.0, jitter=lambda: 1.0
        )
        self.dispatcher = WebhookDispatcher(
            jobs=self.jobs,
            sender=self.sender,
            render=render,
            secret_for=secret_for,
            urls=WebhookUrlPolicy("any"),
            retry=self.retry,
            clock=self.clock,
            sleep=self.sleep,
        )

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def finished_job(self, job_id: str = "job-1", **overrides: Any) -> Job:
        values: dict[str, Any] = {
            "status": JobStatus.SUCCEEDED,
            "webhook_url": HOOK,
            "finished_at": T0,
        }
        values.update(overrides)
        return self.jobs.create(make_job(job_id, **values))


class TestRetryPolicy:
    @pytest.mark.parametrize(
        ("status", "retry"),
        [
            (None, True),
            (429, True),
            (500, True),
            (503, True),
            (200, False),
            (301, False),
            (400, False),
            (404, False),
            (410, False),
        ],
    )
    def test_no_answer_429_and_5xx_are_worth_another_attempt(
        self, status: int | None, retry: bool
    ) -> None:
        """Other 4xx and 3xx are the receiver's final word."""
        assert is_retryable(status) is retry

    def test_waits_double_up_to_the_cap_with_jitter_in_the_upper_half(self) -> None:
        """base 1 s, cap 5 s: 1, 2, 4, 5, 5 at full jitter, half of that at none."""
        high = RetryPolicy(max_attempts=10, base_s=1.0, max_s=5.0, jitter=lambda: 1.0)
        low = RetryPolicy(max_attempts=10, base_s=1.0, max_s=5.0, jitter=lambda: 0.0)
        assert [high.delay_after(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
        assert [low.delay_after(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 2.5, 2.5]

    def test_no_wait_after_the_last_attempt_or_a_final_answer(self) -> None:
        """next_delay is None when nothing more is to be sent."""
        policy = RetryPolicy(max_attempts=3, base_s=1.0, max_s=5.0, jitter=lambda: 1.0)
        assert policy.next_delay(1, 500) == 1.0
        assert policy.next_delay(3, 500) is None
        assert policy.next_delay(1, 404) is None
        assert policy.next_delay(1, 200) is None


class TestDeliver:
    def test_a_500_then_a_200_records_both_and_sends_one_signed_success(self) -> None:
        """Two attempts with one backoff wait; the success ends it; both are signed with the
        owner's secret under one Webhook-Id."""
        h = Harness(500, 200)
        h.finished_job()

        job = h.dispatcher.deliver("job-1")

        assert [(d.attempt, d.status_code, d.succeeded) for d in job.webhook_deliveries] == [
            (1, 500, False),
            (2, 200, True),
        ]
        assert {d.event for d in job.webhook_deliveries} == {"job.succeeded"}
        assert h.sleeps == [1.0]
        assert len(h.sender.sent) == 2
        ids = {request.headers["webhook-id"] for request in h.sender.sent}
        assert ids == {"job-1.job.succeeded"}
        # Each attempt is signed when it is made, by the dispatcher's clock (T0, then T0 + 1 s:
        # too long ago for a receiver's tolerance, so the signature is checked without it).
        signed_at = [int(request.headers["webhook-timestamp"]) for request in h.sender.sent]
        assert signed_at == [int(T0.timestamp()), int(T0.timestamp()) + 1]
        alice = Webhook(secret_for("alice"))
        for request, timestamp in zip(h.sender.sent, signed_at, strict=True):
            assert request.url == HOOK
            assert request.headers["webhook-event"] == "job.succeeded"
            at = datetime.fromtimestamp(timestamp, tz=UTC)
            expected = alice.sign("job-1.job.succeeded", at, request.body)
            assert request.headers["webhook-signature"] == expected
        assert json.loads(h.sender.sent[1].body) == {"id": "job-1", "status": "succeeded"}

    def test_after_a_success_nothing_more_is_sent(self) -> None:
        """A second notify of a delivered job sends nothing and records nothing."""
        h = Harness(204)
        h.finished_job()
        h.dispatcher.deliver("job-1")
        assert h.dispatcher.attempt("job-1") is None
        assert len(h.sender.sent) == 1
        assert len(h.jobs.get("job-1").webhook_deliveries) == 1

    def test_network_errors_429_and_5xx_are_retried_until_the_last_attempt(self) -> None:
        """Four attempts, waits 1, 2, 4 s; the job keeps every error; then it stops."""
        h = Harness(SendFailed("ConnectError: refused"), 429, 503, 502, max_attempts=4)
        h.finished_job(status=JobStatus.FAILED, error=JobError("bad", "it broke"))

        job = h.dispatcher.deliver("job-1")

        assert h.sleeps == [1.0, 2.0, 4.0]
        assert [(d.status_code, d.error) for d in job.webhook_deliveries] == [
            (None, "ConnectError: refused"),
            (429, None),
            (503, None),
            (502, None),
        ]
        assert {d.event for d in job.webhook_deliveries} == {"job.failed"}
        assert h.dispatcher.attempt("job-1") is None
        assert len(h.sender.sent) == 4

    @pytest.mark.parametrize("status", [400, 404, 410, 301])
    def test_other_answers_are_final(self, status: int) -> None:
        """One attempt, recorded, no retry."""
        h = Harness(status)
        h.finished_job(status=JobStatus.CANCELED)
        job = h.dispatcher.deliver("job-1")
        assert [(d.event, d.status_code) for d in job.webhook_deliveries] == [
            ("job.canceled", status)
        ]
        assert h.sleeps == []

    @pytest.mark.parametrize(
        "overrides",
        [
            {"status": JobStatus.QUEUED, "finished_at": None},
            {"status": JobStatus.RUNNING, "finished_at": None},
            {"webhook_url": None},
        ],
        ids=["queued", "running", "no-webhook"],
    )
    def test_unfinished_jobs_and_jobs_without_a_webhook_send_nothing(
        self, overrides: dict[str, Any]
    ) -> None:
        """Only a finished job with a webhook_url owes a delivery."""
        h = Harness()
        h.finished_job(**overrides)
        assert h.dispatcher.attempt("job-1") is None
        assert h.dispatcher.attempt("no-such-job") is None
        assert h.sender.sent == []
        assert h.jobs.get("job-1").webhook_deliveries == ()

    def test_a_target_refused_at_send_time_is_recorded_and_not_retried(self) -> None:
        """The host now resolves to a private address: no request, one refused attempt."""
        h = Harness()
        h.dispatcher.urls = WebhookUrlPolicy("public", resolve=lambda host, port: ["10.0.0.5"])
        h.finished_job(webhook_url="https://hooks.example.com/x")
        job = h.dispatcher.deliver("job-1")
        assert h.sender.sent == []
        (refused,) = job.webhook_deliveries
        assert refused.status_code is None
        assert refused.error is not None and "public address" in refused.error

    def test_a_replayed_job_announces_its_new_status_as_a_new_event(self) -> None:
        """Dead-lettered (delivered), replayed, then succeeded: job.succeeded is owed too."""
        h = Harness(200, 200)
        h.finished_job(status=JobStatus.FAILED, error=JobError("dead_lettered", "gave up"))
        h.dispatcher.deliver("job-1")
        h.jobs.reopen_dead_lettered("job-1")
        h.jobs.claim("job-1", lease_s=30)
        h.jobs.transition(
            "job-1",
            expected={JobStatus.RUNNING},
            target=JobStatus.SUCCEEDED,
            changes=JobChanges(finished_at=h.clock.advance(5)),
        )
        job = h.dispatcher.deliver("job-1")
        assert [(d.event, d.status_code) for d in job.webhook_deliveries] == [
            ("job.failed", 200),
            ("job.succeeded", 200),
        ]


class TestRedrive:
    def test_redrive_schedules_owed_jobs_untouched_for_the_grace_period(self) -> None:
        """Owed and quiet: scheduled; owed but recently attempted, delivered, given up or
        outside the window: left alone."""
        h = Harness()
        h.dispatcher = WebhookDispatcher(
            jobs=h.jobs,
            sender=h.sender,
            render=render,
            secret_for=secret_for,
            urls=WebhookUrlPolicy("any"),
            retry=h.retry,
            redrive=RedriveConfig(window_s=3600, grace_s=60),
            clock=h.clock,
        )
        h.finished_job("quiet")
        h.finished_job("recent", finished_at=T0 + timedelta(seconds=100))
        h.finished_job(
            "just-tried",
            webhook_deliveries=(
                WebhookDelivery(1, "job.succeeded", T0 + timedelta(seconds=90), status_code=500),
            ),
        )
        h.finished_job(
            "delivered",
            webhook_deliveries=(WebhookDelivery(1, "job.succeeded", T0, status_code=200),),
        )
        h.clock.advance(120)

        assert h.dispatcher.redrive() == 1
        # Scheduled once: a second pass before it ran adds nothing.
        assert h.dispatcher.redrive() == 0
        h.clock.advance(7200)
        assert h.dispatcher.redrive() == 0  # outside the window now


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Answers 500 to the first POST and 204 after."""
    with running_receiver(failing_first(500, then=204)) as server:
        yield server


class TestThreaded:
    def test_notify_returns_at_once_and_threads_deliver_with_a_retry(
        self, receiver: WebhookReceiver
    ) -> None:
        """Over real HTTP: notify does not block; the 500 is retried; one 204 is recorded."""
        jobs = MemoryJobStore()
        jobs.create(make_job("job-1", status=JobStatus.SUCCEEDED, webhook_url=receiver.url))
        dispatcher = WebhookDispatcher(
            jobs=jobs,
            sender=HttpxSender(timeout_s=5),
            render=render,
            secret_for=secret_for,
            urls=WebhookUrlPolicy("any"),
            retry=RetryPolicy(max_attempts=3, base_s=0.05, max_s=0.1),
            redrive=RedriveConfig(interval_s=0),
        )
        dispatcher.start()
        try:
            started = time.monotonic()
            dispatcher.notify("job-1")
            assert time.monotonic() - started < 0.05
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                d.succeeded for d in jobs.get("job-1").webhook_deliveries
            ):
                time.sleep(0.02)
        finally:
            dispatcher.close(timeout=5)

        deliveries = jobs.get("job-1").webhook_deliveries
        assert [d.status_code for d in deliveries] == [500, 204]
        assert [r.status for r in receiver.received] == [500, 204]
        verify(secret_for("alice"), receiver.received[-1].headers, receiver.received[-1].body)
