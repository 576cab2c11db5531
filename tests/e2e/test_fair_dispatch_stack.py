"""Fair share between users on the emulator stack (issue 18): API → the Redis line → Pub/Sub
push → worker → GCS and Firestore emulators, every process on one line in Redis. The same
measures as tests/e2e/test_fair_dispatch.py (the embedded profile), plus a process that dies
right after the line let a job through and before it published it.

All of it runs on one stack of its own beside the session's (its own Pub/Sub topics, Firestore
collections and Redis line), with MAX_BATCH_SIZE=1 (a dispatch capacity of 2) and a short
outbox grace (OUTBOX_GRACE_S=5 instead of the default 60 s) so that the stranded job is swept
within seconds."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis

from emulators.stack import Stack, start_stack
from tests.e2e.test_emulator_stack import FAST, admin, client
from tests.e2e.test_fair_dispatch import (
    TERMINAL,
    WINDOW,
    ahead_of,
    report,
    started,
    starts_in_window,
)
from tests.e2e.test_outbox_fault import (
    _firestore_jobs,
    _image_blobs,
    submit_through_a_dying_api,
)
from tests.emulator_stack_fixture import config_beside

GRACE_S = 5.0  # OUTBOX_GRACE_S of this module's stack
SWEEP_S = 1.0  # OUTBOX_SWEEP_INTERVAL_S, jittered by ±20 %


@pytest.fixture(scope="module")
def fair_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker and an API of their own with MAX_BATCH_SIZE=1 on the session's emulators."""
    token = secrets.token_hex(3)
    config = config_beside(
        stack,
        tmp_path_factory.mktemp("fair-stack"),
        pubsub_prefix=f"fair-{token}-",
        extra_env={
            "MAX_BATCH_SIZE": "1",
            # A line of its own in the shared Redis.
            "REDIS_KEY_PREFIX": f"txt2img:fair-{token}:",
            "OUTBOX_GRACE_S": str(GRACE_S),
            "OUTBOX_SWEEP_INTERVAL_S": str(SWEEP_S),
            "WARM_UP": "false",
            "PROGRESS_WRITE_INTERVAL_S": "0.1",
            "JOB_LEASE_S": "30",
            "RATE_LIMIT_SUBMIT_BURST": "500",
            "RATE_LIMIT_SUBMIT_PER_MINUTE": "600",
            "RATE_LIMIT_READ_BURST": "1000",
            "RATE_LIMIT_READ_PER_MINUTE": "6000",
        },
    )
    running = start_stack(config)
    try:
        yield running
    finally:
        running.stop()


def key(stack: Stack, owner: str, weight: int = 1) -> str:
    out = admin(stack, "keys", "create", "--owner", owner, "--weight", str(weight))
    return out.strip().splitlines()[-1]


def owner(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def submit_many(stack: Stack, api_key: str, count: int, **body: Any) -> list[str]:
    """`count` new jobs submitted at once (eight connections), as a batch client would."""
    with client(stack, api_key) as c, ThreadPoolExecutor(8) as pool:

        def one(_: int) -> str:
            created = c.post("/v1/jobs", json={"prompt": "fair", **FAST, **body})
            # 202 even when a worker has ended the job before the API answered (a job of
            # the tiny model is published before it is marked, and may finish in between).
            assert created.status_code == 202, created.text
            return str(created.json()["id"])

        return list(pool.map(one, range(count)))


def finished(
    stack: Stack, api_key: str, ids: list[str], timeout: float = 300
) -> list[dict[str, Any]]:
    """The jobs `ids` of the key's owner once all have ended (read from the owner's listing,
    a few requests a second rather than one per job); each must have succeeded."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict[str, Any]] = {}
    with client(stack, api_key) as c:
        while time.monotonic() < deadline:
            jobs = {j["id"]: j for j in listing(c) if j["id"] in wanted}
            if len(jobs) == len(wanted) and all(j["status"] in TERMINAL for j in jobs.values()):
                break
            time.sleep(1)
    ended = [j for j in jobs.values() if j["status"] in TERMINAL]
    assert len(ended) == len(wanted), f"{len(wanted) - len(ended)} jobs did not end in time"
    assert {j["status"] for j in ended} == {"succeeded"}, [j["error"] for j in ended]
    return ended


def listing(c: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = c.get("/v1/jobs", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


def line_redis(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.config.redis_url, decode_responses=True)


def line_key(stack: Stack, name: str) -> str:
    return f"{stack.env['REDIS_KEY_PREFIX']}{{line}}:{name}"


def line_sizes(stack: Stack) -> dict[str, int]:
    with line_redis(stack) as r:
        return {name: int(r.zcard(line_key(stack, name))) for name in ("waiting", "handed")}


def wait_for_empty_line(stack: Stack, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while (sizes := line_sizes(stack)) != {"waiting": 0, "handed": 0}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return sizes


def test_a_newcomer_starts_before_most_of_a_40_job_backlog(fair_stack: Stack) -> None:
    """First come, first served would start the newcomer's job after all 40."""
    alice, bob = key(fair_stack, owner("fair-alice")), key(fair_stack, owner("fair-bob"))
    backlog = submit_many(fair_stack, alice, 40)
    (newcomer,) = submit_many(fair_stack, bob, 1)
    alice_jobs = finished(fair_stack, alice, backlog)
    (bob_job,) = finished(fair_stack, bob, [newcomer])
    before = ahead_of(bob_job, alice_jobs)
    after = sum(started(job) > started(bob_job) for job in alice_jobs)
    report(
        f"emulator stack, MAX_BATCH_SIZE=1: {before} of the backlog's 40 jobs started before "
        f"the newcomer's, {after} after it"
    )
    assert before <= 10
    assert after >= 30


def test_weights_two_to_one_start_jobs_two_to_one(fair_stack: Stack) -> None:
    gold = key(fair_stack, owner("fair-gold"), 2)
    basic = key(fair_stack, owner("fair-basic"), 1)
    with ThreadPoolExecutor(2) as pool:
        gold_ids, basic_ids = pool.map(
            lambda args: submit_many(fair_stack, *args, num_inference_steps=1),
            [(gold, 130), (basic, 70)],
        )
    everyone_waits = datetime.now().astimezone()
    jobs = finished(fair_stack, gold, gold_ids) + finished(fair_stack, basic, basic_ids)
    counts = starts_in_window(jobs, set(gold_ids), since=everyone_waits)
    early = sum(started(j) <= everyone_waits for j in jobs)
    report(
        f"emulator stack, weights 2:1, {WINDOW} starts while both wait: {counts} "
        f"({early} of the {len(jobs)} started while they were being submitted)"
    )
    assert counts["gold"] + counts["basic"] == WINDOW
    assert abs(counts["gold"] / counts["basic"] - 2) <= 0.2, counts


def test_an_api_killed_after_a_hand_over_leaves_the_job_to_the_sweeper(
    fair_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API process dies after the line let its job through and before it published it:
    the job holds a slot with no message behind it. The healthy API's outbox sweeper
    publishes it once OUTBOX_GRACE_S has passed; every job runs exactly once, and once all
    have ended the line holds no slot."""
    stack = fair_stack
    assert wait_for_empty_line(stack, 30) == {"waiting": 0, "handed": 0}
    name = owner("stranded")
    api_key = key(stack, name)
    auth = {"Authorization": f"Bearer {api_key}"}
    state_dir = stack.config.state_dir

    # 1. An API armed to die right after the hand-over; its own sweeper is off.
    submit_through_a_dying_api(stack, "after_hand_over", auth, "stranded")

    # 2. The job is recorded and let through (it holds a slot), but nothing published it.
    [record] = _firestore_jobs(stack, name, monkeypatch)
    stranded = record.id
    data = record.to_dict()
    assert (data["status"], data["enqueued_at"], data["attempts"]) == ("queued", None, 0)
    with line_redis(stack) as r:
        assert r.zscore(line_key(stack, "handed"), stranded) is not None
    assert line_sizes(stack) == {"waiting": 0, "handed": 1}

    # 3. More jobs through the healthy API: they run through the one slot left meanwhile.
    others = submit_many(stack, api_key, 6)

    # 4. Every job succeeds, the stranded one published by the healthy API's sweeper once its
    # grace period was over (not before: its publisher might still have been at work).
    jobs = {j["id"]: j for j in finished(stack, api_key, [stranded, *others], timeout=120)}
    records = {s.id: s.to_dict() for s in _firestore_jobs(stack, name, monkeypatch)}
    published_s = (records[stranded]["enqueued_at"] - data["created_at"]).total_seconds()
    started_s = (started(jobs[stranded]) - data["created_at"]).total_seconds()
    report(
        f"stranded job (OUTBOX_GRACE_S={GRACE_S:g}, sweep every {SWEEP_S:g} s): published "
        f"{published_s:.1f} s after it was recorded, started after {started_s:.1f} s"
    )
    assert GRACE_S <= published_s <= GRACE_S + 10
    assert stack.api is not None
    api_log = state_dir / f"api-{stack.api.port}.log"
    assert f"outbox: job {stranded} enqueued" in api_log.read_text()
    # Each ran exactly once: one attempt, one set of images.
    for job_id, job in jobs.items():
        assert job["attempts"] == 1, job
        blobs = _image_blobs(stack, job_id, monkeypatch)
        count = job["params"]["num_images"]
        assert len(blobs) == count and all(b.endswith(".png") for b in blobs), blobs
    assert jobs[stranded]["params"]["num_images"] == 2

    # 5. All ended: no slot is held (each ending released its own, the stranded one's too).
    assert wait_for_empty_line(stack, 10) == {"waiting": 0, "handed": 0}
    freed = api_log.read_text().count("dispatcher: freed")
    report(f"sweep passes that freed slots of jobs ended unreleased: {freed}")
