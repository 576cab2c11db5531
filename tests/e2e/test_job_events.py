"""Job events on the emulator stack: the worker publishes each job's end on Redis and the API
wakes the requests waiting on it, instead of finding out at its next re-read of Firestore.

A second API process on the session's stack re-reads the job store only every 60 s here, so
only the event can answer a `Prefer: wait` in time."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import pytest

from emulators.process import Service, free_port, stop_service
from emulators.stack import Stack, _start_app
from tests.e2e.test_emulator_stack import FAST


@pytest.fixture(scope="module")
def slow_polling_api(stack: Stack) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **stack.env,
        **stack.config.api_env,
        "PORT": str(port),
        "PREFER_WAIT_POLL_S": "60",
    }
    api: Service = _start_app("api-slow-poll", "api", url, env, stack.config.state_dir)
    yield url
    stop_service(api)


def test_a_waiting_submit_answers_when_the_worker_says_the_job_ended(
    stack: Stack, slow_polling_api: str
) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}", "Prefer": "wait=30"}
    with httpx.Client(base_url=slow_polling_api, headers=headers, timeout=60) as client:
        started = time.monotonic()
        response = client.post("/v1/jobs", json={"prompt": "a lantern in fog", **FAST})
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    # Without the event it would have been answered after 30 s (the wait), still queued.
    assert elapsed < 15, f"answered after {elapsed:.1f} s"


def test_a_waiting_read_answers_when_another_api_process_cancels(
    stack: Stack, slow_polling_api: str
) -> None:
    """A read waits on the slow-polling API while the stack's own API cancels the job: the
    cancel is published on the bus, and the waiting read answers at once."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    # About 13 s on a 2-core CPU: still running when it is canceled a second later.
    body = {
        "prompt": "a long night",
        "width": 256,
        "height": 256,
        "num_inference_steps": 50,
        "guidance_scale": 7.5,
    }
    with (
        httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as main,
        httpx.Client(base_url=slow_polling_api, headers=headers, timeout=60) as slow,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        job_id = main.post("/v1/jobs", json=body).json()["id"]
        waiting = pool.submit(
            lambda: slow.get(f"/v1/jobs/{job_id}", headers={"Prefer": "wait=30"}).json()
        )
        time.sleep(1.0)  # the read is held by now
        canceled = main.delete(f"/v1/jobs/{job_id}")
        started = time.monotonic()
        job = waiting.result(timeout=60)
        elapsed = time.monotonic() - started
    assert canceled.status_code == 200, canceled.text
    assert job["status"] == "canceled"
    assert elapsed < 15, f"answered {elapsed:.1f} s after the cancel"
