"""The job finisher: the winner of a terminal transition runs each side effect once, a loser
runs none, a failing side effect changes nothing else, and no other code ends a job."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from dal.errors import TransitionConflict
from dal.finisher import JobFinisher
from dal.memory import MemoryJobStore
from dal.records import ImageRef, Job, JobError, JobStatus
from tests.concurrent_callers import at_once
from tests.contracts.job_store_contract import ManualClock, make_job
from tools.import_graph import ROOT


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def jobs(clock: ManualClock) -> MemoryJobStore:
    return MemoryJobStore(clock=clock)


def recording(finisher: JobFinisher) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    finisher.add_handler("first", lambda job: seen.append(("first", job.id)))
    finisher.add_handler("second", lambda job: seen.append(("second", job.status.value)))
    return seen


def test_each_handler_sees_the_terminal_record_once_in_order(jobs: MemoryJobStore) -> None:
    jobs.create(make_job("j"))
    jobs.claim("j", lease_s=60)
    finisher = JobFinisher(jobs)
    seen = recording(finisher)
    image = ImageRef(key="images/j/0.png", width=64, height=64, seed=1)
    ended = finisher.succeed("j", (image,))
    assert (ended.status, ended.images, ended.progress) == (JobStatus.SUCCEEDED, (image,), 1.0)
    assert seen == [("first", "j"), ("second", "succeeded")]


def test_a_transition_that_loses_runs_nothing(jobs: MemoryJobStore) -> None:
    jobs.create(make_job("j"))
    finisher = JobFinisher(jobs)
    seen = recording(finisher)
    finisher.cancel("j")
    with pytest.raises(TransitionConflict):
        finisher.cancel("j")
    with pytest.raises(TransitionConflict):
        finisher.fail_unqueued("j", "late")
    assert seen == [("first", "j"), ("second", "canceled")]
    assert jobs.get("j").status == JobStatus.CANCELED


def test_concurrent_endings_have_one_winner_and_one_set_of_effects(jobs: MemoryJobStore) -> None:
    jobs.create(make_job("j"))
    jobs.claim("j", lease_s=60)
    finisher = JobFinisher(jobs)
    seen = recording(finisher)

    def end(index: int) -> str:
        try:
            if index % 2:
                finisher.cancel("j")
            else:
                finisher.fail("j", JobError("x", "y"))
        except TransitionConflict:
            return "lost"
        return "won"

    results = at_once([functools.partial(end, i) for i in range(8)])
    assert sorted(results).count("won") == 1
    assert len(seen) == 2


def test_a_failing_handler_is_skipped_and_the_rest_still_run(jobs: MemoryJobStore) -> None:
    jobs.create(make_job("j"))
    finisher = JobFinisher(jobs)

    def broken(job: Job) -> None:
        raise RuntimeError("the bus is gone")

    finisher.add_handler("broken", broken)
    seen = recording(finisher)
    ended = finisher.fail_unqueued("j", "could not publish")
    assert ended.error == JobError("enqueue_failed", "could not publish")
    assert seen == [("first", "j"), ("second", "failed")]


def test_dead_letter_leaves_a_job_under_a_live_lease_then_takes_it_once_lapsed(
    jobs: MemoryJobStore, clock: ManualClock
) -> None:
    jobs.create(make_job("j"))
    jobs.claim("j", lease_s=60)
    jobs.release("j", error=JobError("out_of_memory", "CUDA OOM"))
    jobs.claim("j", lease_s=60)
    finisher = JobFinisher(jobs, clock=clock)
    seen = recording(finisher)
    assert finisher.dead_letter("j", "the queue gave up") is None
    assert finisher.dead_letter("missing", "the queue gave up") is None
    clock.advance(61)
    failed = finisher.dead_letter("j", "the queue gave up")
    assert failed is not None and failed.error is not None
    assert failed.error.code == "dead_lettered"
    assert failed.error.message == "the queue gave up (last error: out_of_memory: CUDA OOM)"
    assert finisher.dead_letter("j", "again") is None
    assert len(seen) == 2


def test_a_dead_letter_of_a_job_tried_fewer_times_than_allowed_leaves_it_queued(
    jobs: MemoryJobStore,
) -> None:
    """Its messages died without reaching a worker (every worker down): the job still needs
    a GPU, and the sweep hands it over again; only a job tried MAX_DELIVERY_ATTEMPTS times
    is failed."""
    jobs.create(make_job("j"))
    finisher = JobFinisher(jobs, dead_letter_after_attempts=2)
    seen = recording(finisher)
    assert finisher.dead_letter("j", "the queue gave up") is None
    for _ in range(2):
        jobs.claim("j", lease_s=60)
        jobs.release("j", error=JobError("out_of_memory", "CUDA OOM"))
    failed = finisher.dead_letter("j", "the queue gave up")
    assert failed is not None and failed.status == JobStatus.FAILED
    assert len(seen) == 2


def test_no_code_but_the_finisher_moves_a_job_to_a_terminal_status() -> None:
    """The one place: a terminal `target=` anywhere else would bypass the side effects."""
    terminal = {"SUCCEEDED", "FAILED", "CANCELED"}
    offenders = []
    for package in ("api", "gpu_worker", "dal"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "dal" / "finisher.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.keyword)
                    and node.arg == "target"
                    and isinstance(node.value, ast.Attribute)
                    and node.value.attr in terminal
                ):
                    offenders.append(f"{Path(path).relative_to(ROOT)}:{node.value.lineno}")
    assert offenders == []
