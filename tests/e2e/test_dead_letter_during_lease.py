"""The queue gives up on a job while its dead worker's lease is still live (emulator stack).

The worker is SIGKILLed mid-generation; every push of the job's message fails while it is
down, so Pub/Sub dead-letters the message. The dead-letter recorder must not end a job that
was tried once (its messages died without reaching a worker), nor one under a live lease; the
sweep takes the job back once the lease lapses, and it succeeds on its second attempt. The
owner is left with nothing in flight.

The lease, heartbeat and sweep interval are the defaults a user gets; only the Pub/Sub retry
policy is short (1-2 s, 5 attempts), so that the queue gives up within seconds.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from dal.pubsub import DeadLetterBox
from dal.pubsub.client import make_subscriber, subscription_path
from emulators.stack import Stack, start_stack
from tests.e2e.test_emulator_stack import client
from tests.emulator_stack_fixture import config_beside

SLOW = {"width": 96, "height": 96, "num_inference_steps": 40, "guidance_scale": 1.0}
LEASE_S = 30  # the default JOB_LEASE_S
SWEEP_S = 15  # the default OUTBOX_SWEEP_INTERVAL_S, jittered by ±20 %


@pytest.fixture
def short_retry_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = config_beside(
        stack,
        tmp_path_factory.mktemp("dead-letter-lease"),
        pubsub_prefix=f"dll-{secrets.token_hex(3)}-",
        max_delivery_attempts=5,
        extra_env={"WARM_UP": "false", "PROGRESS_WRITE_INTERVAL_S": "0.1"},
    )
    running = start_stack(config)
    try:
        yield running
    finally:
        running.stop()


def dead_letters(stack: Stack) -> list[str | None]:
    """The job ids waiting in the dead-letter subscription (left there)."""
    subscriber = make_subscriber()
    try:
        box = DeadLetterBox(
            subscriber,
            subscription_path(stack.config.project, stack.env["PUBSUB_DEAD_LETTER_SUBSCRIPTION"]),
        )
        letters = box.take_all()
        box.release(letters)
        return [letter.job_id for letter in letters]
    finally:
        subscriber.close()


def test_a_dead_letter_during_a_live_lease_leaves_the_job_to_the_sweep(
    short_retry_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = short_retry_stack
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", stack.env["PUBSUB_EMULATOR_HOST"])
    with client(stack) as c:
        created = c.post("/v1/jobs", json={"prompt": "given up on", "seed": 3, **SLOW})
        assert created.status_code in (200, 202), created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["progress"] <= 0:
            assert time.monotonic() < deadline, "the generation never started"
            time.sleep(0.05)
        stack.kill_worker()
        killed = time.monotonic()

        # Pub/Sub's redeliveries fail while the worker is down, until it gives up.
        deadline = time.monotonic() + 60
        while job_id not in dead_letters(stack):
            assert time.monotonic() < deadline, "the message was never dead-lettered"
            time.sleep(1)
        gave_up_s = time.monotonic() - killed
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "running", job  # under the dead worker's lease

        stack.start_worker()  # the recorder's push arrives now, and leaves the job alone
        deadline = killed + LEASE_S + 1.2 * SWEEP_S + 30  # + the run on a cold worker
        while (job := c.get(f"/v1/jobs/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
            "canceled",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        ended_s = time.monotonic() - killed
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert len(job["images"]) == 1
        listing = c.get("/v1/jobs", params={"limit": 100}).json()["items"]
        assert [j["id"] for j in listing if j["status"] in ("queued", "running")] == []
    print(  # noqa: T201 - the figures, read in the test log
        f"\nqueue gave up {gave_up_s:.1f} s after the kill; the job succeeded {ended_s:.1f} s "
        "after it"
    )
