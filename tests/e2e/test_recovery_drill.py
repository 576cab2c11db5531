"""The operator's drill, with the defaults a user gets from `make dev` (no shortened lease,
heartbeat, sweep interval or Pub/Sub backoff): twelve jobs in flight, the GPU worker SIGKILLed
a second after they were submitted, then started again, at once or two minutes later. Every job
succeeds, once, with its images; the figures are printed.

Its own worker and API on the session stack's emulators, under Pub/Sub names of its own. The
only settings changed from the defaults are the submit rate limit (twelve submits at once) and
the warm-up (each start of the tiny model's worker would warm it up for nothing).

`make test` runs the immediate restart (under two minutes); `make drill` runs both, the
two-minute outage too (`DRILL_OUTAGES=0,120`), and prints the figures.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from emulators.stack import Stack, StackConfig, start_stack
from tests.e2e.test_emulator_stack import client
from tests.emulator_stack_fixture import config_beside

JOBS = 12
# One to two seconds of compute each on this machine's CPUs, as in the drill.
WORK = {"width": 128, "height": 128, "num_inference_steps": 30, "guidance_scale": 1.0}
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture
def drill_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    defaults = StackConfig()
    config = config_beside(
        stack,
        tmp_path_factory.mktemp("drill"),
        pubsub_prefix=f"drill-{secrets.token_hex(3)}-",
        max_delivery_attempts=defaults.max_delivery_attempts,
        min_backoff_s=defaults.min_backoff_s,
        max_backoff_s=defaults.max_backoff_s,
        extra_env={
            "WARM_UP": "false",
            "RATE_LIMIT_SUBMIT_BURST": "100",
            "RATE_LIMIT_SUBMIT_PER_MINUTE": "600",
        },
    )
    running = start_stack(config)
    try:
        yield running
    finally:
        running.stop()


def submit_all(stack: Stack) -> list[str]:
    def one(index: int) -> str:
        with client(stack) as c:
            response = c.post("/v1/jobs", json={"prompt": f"drill {index}", "seed": index, **WORK})
            assert response.status_code in (200, 202), response.text
            return str(response.json()["id"])

    with ThreadPoolExecutor(JOBS) as pool:
        return list(pool.map(one, range(JOBS)))


def states(stack: Stack, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The drill's jobs, in one list request (the read rate limit stays the default's)."""
    with client(stack) as c:
        response = c.get("/v1/jobs", params={"limit": 100})
        assert response.status_code == 200, response.text
        return {j["id"]: j for j in response.json()["items"] if j["id"] in ids}


def wait_all_ended(stack: Stack, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = states(stack, ids)
        if all(j["status"] in TERMINAL for j in jobs.values()) or time.monotonic() > deadline:
            return jobs
        time.sleep(1.0)


OUTAGES_S = [float(s) for s in os.environ.get("DRILL_OUTAGES", "0").split(",")]


@pytest.mark.parametrize("down_s", OUTAGES_S, ids=lambda s: f"down-{s:.0f}s")
def test_a_killed_worker_loses_no_job(drill_stack: Stack, down_s: float) -> None:
    stack = drill_stack
    ids = submit_all(stack)
    time.sleep(1.0)
    stack.kill_worker()
    killed = time.monotonic()
    before = states(stack, ids)
    time.sleep(down_s)
    stack.start_worker()
    restarted = time.monotonic()

    jobs = wait_all_ended(stack, ids, timeout_s=60)
    last = time.monotonic() - restarted
    statuses = sorted(j["status"] for j in jobs.values())
    print(  # noqa: T201 - the drill's figures, read in the test log
        f"\ndrill {down_s:.0f} s down: at the kill "
        f"{sorted(j['status'] for j in before.values())}; all ended {last:.1f} s after the "
        f"restart ({time.monotonic() - killed:.1f} s after the kill); attempts "
        f"{sorted(j['attempts'] for j in jobs.values())}"
    )
    assert statuses == ["succeeded"] * JOBS, jobs
    assert all(len(j["images"]) == 1 for j in jobs.values())
    assert last <= 60
