"""The pipeline in a child process (EngineProcess) keeps every promise of the in-process
engine: the same images for the same seeds, per-step progress, a stop from the step callback,
the engine's own errors, and it survives its child being killed. Real tiny model, real child
processes (spawned)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from dal.errors import GenerationError, GeneratorUnavailable
from dal.records import GenerationRequest
from gpu_worker.batching import BatchingGenerator
from gpu_worker.engine import DiffusionEngine
from gpu_worker.engine_process import (
    STEP_REPORT_INTERVAL_S,
    EngineConfig,
    EngineProcess,
    pipeline_threads,
)
from tests.concurrent_callers import concurrently
from tests.integration.test_batched_engine import batches_recorded, pixels


def req(prompt: str, seeds: tuple[int, ...], *, steps: int = 2, width: int = 64):
    return GenerationRequest(prompt, None, width, 64, steps, 7.5, seeds)


@pytest.fixture(scope="module")
def child(tiny_model_dir: Path) -> Iterator[EngineProcess]:
    process = EngineProcess(EngineConfig(model_path=tiny_model_dir, warm_up=True))
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def in_process(tiny_model_dir: Path) -> DiffusionEngine:
    engine = DiffusionEngine(tiny_model_dir)
    engine.load()
    return engine


def test_ready_reports_the_model_and_its_timings(child: EngineProcess, tiny_model_dir) -> None:
    assert child.model_id == tiny_model_dir.name
    assert child.device == "cpu"
    assert child.default_size == (64, 64)
    assert child.load_seconds > 0 and child.warm_up_seconds > 0
    assert child.pid is not None and child.pid != os.getpid()
    child.check_ready()


def test_the_same_seeds_give_the_same_images_as_in_process(
    child: EngineProcess, in_process: DiffusionEngine
) -> None:
    """Each request's images come back in seed order and equal the in-process engine's up to
    float noise (the child may run on a different number of threads)."""
    requests = [req("a red fox", (1, 2)), req("a blue bird", (3,))]
    from_child = child.generate_batch(requests)
    assert [[i.seed for i in r] for r in from_child] == [[1, 2], [3]]
    alone = in_process.generate(req("a blue bird", (3,)))[0].png
    assert np.abs(pixels(from_child[1][0].png) - pixels(alone)).max() <= 2
    assert child.generate_batch(requests) == from_child  # deterministic, call after call


def test_steps_are_reported_in_the_caller_the_last_always(child: EngineProcess) -> None:
    seen: list[tuple[int, int, int]] = []
    child.generate(req("steps", (4,), steps=3), lambda d, t: seen.append((d, t, os.getpid())))
    assert seen[-1] == (3, 3, os.getpid())
    assert [d for d, _, _ in seen] == sorted({d for d, _, _ in seen})


def test_steps_closer_than_the_report_interval_are_not_reported(child: EngineProcess) -> None:
    """Each step event wakes threads of the serving process: steps come back at most one per
    STEP_REPORT_INTERVAL_S (and the last one), however fast the pipeline steps."""
    seen: list[tuple[int, float]] = []
    started = time.monotonic()
    child.generate(
        req("many steps", (4,), steps=40), lambda d, t: seen.append((d, time.monotonic()))
    )
    took = time.monotonic() - started
    assert seen[-1][0] == 40
    assert len(seen) < 40
    # Every report but the last comes at least an interval after the one before it (with a
    # margin for the pipe): at most one per interval, plus the last.
    assert len(seen) <= took / STEP_REPORT_INTERVAL_S + 2


def test_a_step_callback_that_raises_stops_the_call_and_the_next_call_works(
    child: EngineProcess,
) -> None:
    class Canceled(Exception):
        pass

    steps: list[int] = []

    def cancel_at_first_report(done: int, total: int) -> None:
        steps.append(done)
        raise Canceled

    with pytest.raises(Canceled):
        child.generate(req("stop me", (5,), steps=20), cancel_at_first_report)
    assert len(steps) == 1  # the callback is not called again after it raised
    assert len(child.generate(req("after", (6,)))) == 1


def test_the_engines_own_errors_cross_the_process_boundary(child: EngineProcess) -> None:
    with pytest.raises(GenerationError) as raised:
        child.generate(req("odd size", (7,), width=60))  # not a multiple of 8
    assert raised.value.code == "invalid_parameters" and not raised.value.retryable
    with pytest.raises(GenerationError) as no_seed:
        child.generate(req("no seed", ()))
    assert no_seed.value.code == "invalid_parameters"


def test_a_killed_child_fails_the_call_in_flight_retryably_and_is_restarted(
    tiny_model_dir: Path,
) -> None:
    process = EngineProcess(EngineConfig(model_path=tiny_model_dir, warm_up=False))
    try:
        first_pid = process.start().pid

        def kill_at_first_step(done: int, total: int) -> None:
            os.kill(first_pid, signal.SIGKILL)

        with pytest.raises(GenerationError) as raised:
            process.generate(req("doomed", (8,), steps=50), kill_at_first_step)
        assert raised.value.code == "engine_crashed" and raised.value.retryable
        images = process.generate(req("reborn", (9,)))
        assert len(images) == 1
        assert process.pid is not None and process.pid != first_pid
        assert process.restarts == 1
    finally:
        process.close()


def test_a_killed_child_leaves_no_semaphore_behind(tiny_model_dir: Path) -> None:
    """Killed mid-life (the OOM killer, a `kill`), the pipeline process leaves nothing for the
    resource tracker to report as leaked when the worker exits: diffusers' progress bars would
    otherwise have made tqdm create a named semaphore in it. A fresh interpreter, so that the
    tracker is its own and speaks when it exits."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from dal.records import GenerationRequest
        from gpu_worker.engine_process import EngineConfig, EngineProcess

        process = EngineProcess(EngineConfig(model_path={str(tiny_model_dir)!r}, warm_up=False))
        pid = process.start().pid
        process.generate(GenerationRequest("a", None, 64, 64, 2, 7.5, (1,)))
        os.kill(pid, signal.SIGKILL)
        process.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "leaked semaphore" not in done.stderr, done.stderr[-3000:]


def test_a_model_that_cannot_load_is_reported_not_retried(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    process = EngineProcess(EngineConfig(model_path=tmp_path, warm_up=False))
    with pytest.raises(GenerationError) as raised:
        process.start()
    assert raised.value.code == "engine_unavailable" and not raised.value.retryable
    assert process.pid is None
    with pytest.raises(GeneratorUnavailable) as unready:
        process.check_ready()
    assert "failed to start" in unready.value.reason
    assert raised.value.message in unready.value.reason


def test_close_stops_the_child(tiny_model_dir: Path) -> None:
    process = EngineProcess(EngineConfig(model_path=tiny_model_dir, warm_up=False))
    pid = process.start().pid
    process.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(GeneratorUnavailable):
        process.check_ready()


def test_batched_jobs_in_the_child_keep_their_own_images(
    child: EngineProcess, in_process: DiffusionEngine
) -> None:
    """Through the batcher: three jobs share one call in the child, each gets its own
    images (equal, up to float noise, to running alone)."""
    batcher = BatchingGenerator(child, max_batch_images=8, max_wait_s=5.0)
    requests = [req("a red fox", (11,)), req("a blue bird", (12,)), req("a frog", (13,))]
    before = batches_recorded()
    results = [
        images[0].png
        for images in concurrently(batcher, [partial(batcher.generate, r) for r in requests])
    ]
    after = batches_recorded()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)
    for i, request in enumerate(requests):
        alone = in_process.generate(request)[0].png
        assert np.abs(pixels(results[i]) - pixels(alone)).max() <= 2


def test_pipeline_threads_leave_a_core_to_serve_unless_pinned() -> None:
    cores = len(os.sched_getaffinity(0))
    assert pipeline_threads(3, "cpu") == 3
    assert pipeline_threads(0, "cuda") is None
    assert pipeline_threads(0, "cpu") == max(1, cores - 1)
    assert pipeline_threads(0, "cpu", pinned=True) == cores


def test_two_outstanding_calls_run_one_after_the_other_and_both_answer(
    child: EngineProcess,
) -> None:
    """The second call, sent while the first runs, waits in the child and is answered with
    its own images; a stop of the running call leaves the queued one alone."""
    results: dict[str, object] = {}
    first_started = threading.Event()

    class Canceled(Exception):
        pass

    def first() -> None:
        def cancel_later(done: int, total: int) -> None:
            first_started.set()
            if done >= 3:  # the first step reported past the third
                raise Canceled

        try:
            child.generate(req("first", (21,), steps=30), cancel_later)
        except Canceled as exc:
            results["first"] = exc

    def second() -> None:
        first_started.wait(30)
        results["second"] = child.generate(req("second", (22,)))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert isinstance(results["first"], Canceled)
    second_images = results["second"]
    assert isinstance(second_images, list) and [i.seed for i in second_images] == [22]
    assert child.generate(req("second", (22,)))[0].png == second_images[0].png


def test_a_child_killed_with_two_calls_outstanding_fails_both_retryably(
    tiny_model_dir: Path,
) -> None:
    process = EngineProcess(EngineConfig(model_path=tiny_model_dir, warm_up=False))
    try:
        pid = process.start().pid
        errors: list[BaseException] = []
        running = threading.Event()

        def call(steps: int, on_step) -> None:
            try:
                process.generate(req("doomed", (1,), steps=steps), on_step)
            except BaseException as exc:
                errors.append(exc)

        def mark_running(done: int, total: int) -> None:
            running.set()

        first = threading.Thread(target=call, args=(200, mark_running))
        first.start()
        running.wait(60)
        second = threading.Thread(target=call, args=(2, None))
        second.start()
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        first.join(60)
        second.join(60)
        assert len(errors) == 2
        assert all(isinstance(e, GenerationError) and e.code == "engine_crashed" for e in errors)
        assert process.restarts == 1
        assert len(process.generate(req("reborn", (2,)))) == 1
    finally:
        process.close()


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_child_that_keeps_dying_makes_the_engine_unready_until_it_stops(
    tiny_model_dir: Path,
) -> None:
    """A death is survived (the next call starts another child); the limit's worth within the
    window makes check_ready fail, and it passes again once the window has gone by. (A limit
    of two, not the default three, to start one child fewer.)"""
    clock = SteppedClock()
    process = EngineProcess(
        EngineConfig(model_path=tiny_model_dir, warm_up=False),
        crash_limit=2,
        crash_window_s=300.0,
        clock=clock,
    )
    try:
        for death in (1, 2):
            pid = process.start().pid  # the second starts a new child

            def kill_at_first_step(done: int, total: int, pid: int = pid) -> None:
                os.kill(pid, signal.SIGKILL)

            with pytest.raises(GenerationError):
                process.generate(req("doomed", (8,), steps=50), kill_at_first_step)
            clock.now += 10.0
            if death == 1:
                process.check_ready()
        with pytest.raises(GeneratorUnavailable) as unready:
            process.check_ready()
        assert unready.value.reason == "the pipeline process crashed 2 times in the last 5 minutes"
        assert process.restarts == 2 and process.pid is None  # checking started nothing
        clock.now += 300.0
        process.check_ready()
    finally:
        process.close()
