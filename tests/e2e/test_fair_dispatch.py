"""Fair share between users on the embedded profile, as a client sees it: the real service
process, the tiny model, keys made with the admin command, jobs submitted over HTTP. The order
in which jobs start is read from their `started_at`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningService, running_service

FAST = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}
TERMINAL = {"succeeded", "failed", "canceled"}
# Starts counted while two keys wait: start-time fair queueing keeps each key within a job or
# two of its share, so a 120-start window measures a 2:1 ratio to within 10 %.
WINDOW = 120


@pytest.fixture(scope="module")
def one_at_a_time(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """MAX_BATCH_SIZE=1: the dispatcher's capacity is 2 (one job running, the next ready)."""
    data = tmp_path_factory.mktemp("fair-batch1")
    with running_service(tiny_model_dir, data, MAX_BATCH_SIZE="1") as service:
        yield service


def key(service: RunningService, owner: str, weight: int = 1) -> str:
    out = service.admin("keys", "create", "--owner", owner, "--weight", str(weight))
    return out.strip().splitlines()[-1]


def submit_many(service: RunningService, api_key: str, count: int, **body: Any) -> list[str]:
    """`count` jobs submitted at once (eight connections), as a batch client would."""
    with service.client(api_key) as client, ThreadPoolExecutor(8) as pool:

        def one(_: int) -> str:
            created = client.post("/v1/jobs", json={"prompt": "fair", **FAST, **body})
            assert created.status_code == 202, created.text
            return str(created.json()["id"])

        return list(pool.map(one, range(count)))


def finished(service: RunningService, api_key: str, ids: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 180
    with service.client(api_key) as client:
        jobs: dict[str, dict[str, Any]] = {}
        while len(jobs) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in jobs:
                    job = client.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in TERMINAL:
                        jobs[job_id] = job
            time.sleep(0.1)
    assert len(jobs) == len(ids), "jobs did not finish in time"
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    return list(jobs.values())


def report(figures: str) -> None:
    """The measured figures, in the output of every run (the issue's note quotes them)."""
    print(f"\n{figures}")  # noqa: T201


def started(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["started_at"])


def ahead_of(
    newcomer: dict[str, Any], backlog: list[dict[str, Any]], *, same_batch_s: float = 0.0
) -> int:
    """Backlog jobs that started before the newcomer's job and were still running when it
    was submitted (those that had ended by then were never in its way). Jobs claimed less
    than `same_batch_s` before it start in the same pipeline call: not before it."""
    arrived = datetime.fromisoformat(newcomer["created_at"])
    cutoff = started(newcomer) - timedelta(seconds=same_batch_s)
    return sum(
        started(job) < cutoff and datetime.fromisoformat(job["finished_at"]) > arrived
        for job in backlog
    )


def starts_in_window(
    jobs: list[dict[str, Any]], gold_ids: set[str], *, since: datetime
) -> dict[str, int]:
    """Of the first WINDOW jobs to start after `since`, how many were gold's and basic's."""
    window = sorted((j for j in jobs if started(j) > since), key=started)[:WINDOW]
    gold = sum(j["id"] in gold_ids for j in window)
    return {"gold": gold, "basic": len(window) - gold}


def test_a_newcomer_starts_before_most_of_a_40_job_backlog(one_at_a_time: RunningService) -> None:
    """First come, first served would start the newcomer's job after all 40."""
    alice, bob = key(one_at_a_time, "fair-alice"), key(one_at_a_time, "fair-bob")
    backlog = submit_many(one_at_a_time, alice, 40)
    (newcomer,) = submit_many(one_at_a_time, bob, 1)
    alice_jobs = finished(one_at_a_time, alice, backlog)
    (bob_job,) = finished(one_at_a_time, bob, [newcomer])
    before = ahead_of(bob_job, alice_jobs)
    report(f"MAX_BATCH_SIZE=1: {before} of the backlog's 40 jobs started before the newcomer's")
    assert before <= 10


def test_weights_two_to_one_start_jobs_two_to_one(one_at_a_time: RunningService) -> None:
    gold, basic = key(one_at_a_time, "fair-gold", 2), key(one_at_a_time, "fair-basic", 1)
    with ThreadPoolExecutor(2) as pool:
        gold_ids, basic_ids = pool.map(
            lambda args: submit_many(one_at_a_time, *args, num_inference_steps=1),
            [(gold, 130), (basic, 70)],
        )
    everyone_waits = datetime.now().astimezone()
    jobs = finished(one_at_a_time, gold, gold_ids) + finished(one_at_a_time, basic, basic_ids)
    counts = starts_in_window(jobs, set(gold_ids), since=everyone_waits)
    report(f"weights 2:1, {WINDOW} starts while both wait: {counts}")
    assert counts["gold"] + counts["basic"] == WINDOW
    assert abs(counts["gold"] / counts["basic"] - 2) <= 0.2, counts


def succeeded(client: Any, ids: list[str]) -> int:
    page = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    return sum(job["status"] == "succeeded" for job in page if job["id"] in ids)


def test_a_waiting_jobs_place_falls_and_its_estimate_holds(one_at_a_time: RunningService) -> None:
    """Under a steady load, `queue_position` only falls until the job is handed over, and the
    first `estimated_start_at` is within a factor of 2 of the actual start."""
    carol = key(one_at_a_time, "fair-carol")
    ids = submit_many(one_at_a_time, carol, 12, num_inference_steps=8)
    with one_at_a_time.client(carol) as client:
        # One list page a round, not a read per job: a round of twelve reads took long enough
        # on a loaded machine for most of the backlog to finish before the watched job came.
        while succeeded(client, ids) < 4:
            time.sleep(0.02)
        (watched,) = submit_many(one_at_a_time, carol, 1, num_inference_steps=8)
        positions: list[int] = []
        estimate = None
        while True:
            job = client.get(f"/v1/jobs/{watched}").json()
            if job["status"] != "queued":
                break
            positions.append(job["queue_position"])
            if estimate is None and job["estimated_start_at"] is not None:
                asked = datetime.now().astimezone()
                estimate = datetime.fromisoformat(job["estimated_start_at"])
            time.sleep(0.02)
        job = finished(one_at_a_time, carol, [watched])[0]
    assert job["queue_position"] is None and job["estimated_start_at"] is None
    assert positions and positions == sorted(positions, reverse=True), positions
    assert positions[0] >= 3
    assert estimate is not None, "no estimate while it waited"
    predicted = (estimate - asked).total_seconds()
    actual = (started(job) - asked).total_seconds()
    report(f"position {positions[0]}: estimated start in {predicted:.2f} s, actual {actual:.2f} s")
    assert 0.5 <= predicted / actual <= 2.0


def test_with_the_defaults_no_more_than_the_capacity_starts_before_a_newcomer(
    service: RunningService,
) -> None:
    """The session's service runs with the defaults: MAX_BATCH_SIZE=8, a capacity of 16."""
    alice, bob = key(service, "fair-default-alice"), key(service, "fair-default-bob")
    capacity = 16  # 2 x MAX_BATCH_SIZE (8)
    backlog = submit_many(service, alice, 40, num_inference_steps=8)
    (newcomer,) = submit_many(service, bob, 1, num_inference_steps=8)
    alice_jobs = finished(service, alice, backlog)
    (bob_job,) = finished(service, bob, [newcomer])
    # Jobs handed over one after the other are claimed by different threads, whose
    # started_at writes may land a few milliseconds out of order; claims within the batcher's
    # wait (MAX_BATCH_WAIT_MS, 20 ms) share one pipeline call.
    before = ahead_of(bob_job, alice_jobs, same_batch_s=0.020)
    report(f"defaults: {before} of the backlog's 40 jobs started before the newcomer's")
    assert before <= capacity
