"""InlineJobQueue: runs enqueued job ids on background threads of this process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from dal.errors import QueueUnavailable
from dal.inline import InlineJobQueue
from dal.records import Job, JobParams

WAIT_S = 5.0

QueueFactory = Callable[..., InlineJobQueue]


class Recorder:
    """A run_job that records which ids ran, on which thread, and can be told to block or fail."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.threads: set[str] = set()
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> None:
        self.started.set()
        assert self.gate.wait(WAIT_S), "test never released the gate"
        with self._lock:
            self.ran.append(job_id)
            self.threads.add(threading.current_thread().name)
        if job_id in self.fail_on:
            raise RuntimeError(f"boom in {job_id}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_queue() -> Iterator[QueueFactory]:
    """Builds started queues and closes them all after the test, whatever happened."""
    made: list[InlineJobQueue] = []

    def factory(run_job: Callable[[str], object], **kwargs: object) -> InlineJobQueue:
        queue = InlineJobQueue(run_job, **kwargs)  # type: ignore[arg-type]
        made.append(queue)
        queue.start()
        return queue

    yield factory
    for queue in made:
        queue.close(timeout=WAIT_S)


def test_runs_enqueued_ids_in_order_on_a_background_thread(
    make_queue: QueueFactory, recorder: Recorder
) -> None:
    """Jobs run one after another in enqueue order, off the caller's thread."""
    queue = make_queue(recorder, name="test-worker")
    ids = [f"job-{i}" for i in range(20)]
    for job_id in ids:
        queue.enqueue_id(job_id)
    assert queue.wait_idle(timeout=WAIT_S)
    assert recorder.ran == ids
    assert recorder.threads == {"test-worker-0"}
    assert threading.current_thread().name not in recorder.threads
    assert queue.depth == 0


def test_enqueue_takes_a_job_record(make_queue: QueueFactory, recorder: Recorder) -> None:
    """enqueue(job) runs the job's id, as the JobQueue port promises."""
    queue = make_queue(recorder)
    params = JobParams(
        prompt="p", width=64, height=64, num_inference_steps=2, guidance_scale=1.0, seed=1
    )
    queue.enqueue(Job(id="job-from-record", owner="alice", params=params, model="m"))
    assert queue.wait_idle(timeout=WAIT_S)
    assert recorder.ran == ["job-from-record"]


def test_wait_idle_times_out_while_a_job_runs_and_depth_counts_it(
    make_queue: QueueFactory, recorder: Recorder
) -> None:
    """wait_idle returns False while work remains, and depth counts waiting and running jobs."""
    recorder.gate.clear()
    queue = make_queue(recorder)
    queue.enqueue_id("slow")
    queue.enqueue_id("next")
    assert recorder.started.wait(WAIT_S)
    assert queue.depth == 2
    assert not queue.wait_idle(timeout=0.05)
    recorder.gate.set()
    assert queue.wait_idle(timeout=WAIT_S)
    assert queue.depth == 0
    assert recorder.ran == ["slow", "next"]


def test_exception_in_run_job_is_logged_and_the_next_job_still_runs(
    make_queue: QueueFactory, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception escaping run_job is logged with its traceback, and the worker carries on."""
    recorder.fail_on = {"bad"}
    queue = make_queue(recorder)
    with caplog.at_level(logging.ERROR, logger="dal.inline.job_queue"):
        for job_id in ("before", "bad", "after"):
            queue.enqueue_id(job_id)
        assert queue.wait_idle(timeout=WAIT_S)
    assert recorder.ran == ["before", "bad", "after"]
    errors = [r for r in caplog.records if r.name == "dal.inline.job_queue"]
    assert len(errors) == 1
    assert "bad" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)


def test_several_workers_run_every_job_once(make_queue: QueueFactory, recorder: Recorder) -> None:
    """With several worker threads every enqueued job still runs exactly once."""
    queue = make_queue(recorder, workers=4)
    ids = [f"job-{i}" for i in range(40)]
    for job_id in ids:
        queue.enqueue_id(job_id)
    assert queue.wait_idle(timeout=WAIT_S)
    assert sorted(recorder.ran) == sorted(ids)


def test_enqueue_after_close_raises_store_unavailable(
    make_queue: QueueFactory, recorder: Recorder
) -> None:
    """A closed queue refuses new jobs with QueueUnavailable and runs nothing more."""
    queue = make_queue(recorder)
    queue.close(timeout=WAIT_S)
    with pytest.raises(QueueUnavailable):
        queue.enqueue_id("late")
    assert recorder.ran == []
    queue.close(timeout=WAIT_S)  # closing twice is harmless


def test_jobs_waiting_at_close_are_not_run(make_queue: QueueFactory, recorder: Recorder) -> None:
    """close lets the running job finish but skips the jobs still waiting behind it."""
    recorder.gate.clear()
    queue = make_queue(recorder)
    for job_id in ("running", "waiting-1", "waiting-2"):
        queue.enqueue_id(job_id)
    assert recorder.started.wait(WAIT_S)
    queue.close(timeout=0)  # returns at once: the worker is still inside "running"
    recorder.gate.set()
    assert queue.wait_idle(timeout=WAIT_S)
    assert recorder.ran == ["running"]


def test_workers_must_be_at_least_one(recorder: Recorder) -> None:
    """A queue without workers could never run anything, so it is refused."""
    with pytest.raises(ValueError):
        InlineJobQueue(recorder, workers=0)


def test_one_job_at_a_time_keeps_to_the_worker_that_went_idle_last(
    make_queue: QueueFactory, recorder: Recorder
) -> None:
    """Jobs that never overlap stay on the warm worker instead of visiting every thread in
    turn. At most two: the next job may arrive before the last one's worker is idle again."""
    queue = make_queue(recorder, workers=8)
    for i in range(20):
        queue.enqueue_id(f"job-{i}")
        assert queue.wait_idle(timeout=WAIT_S)
    assert recorder.ran == [f"job-{i}" for i in range(20)]
    assert len(recorder.threads) <= 2
