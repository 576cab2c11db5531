"""Dynamic batching: concurrent compatible requests share one engine call, each keeping its
own images, progress, cancel and failure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial

import pytest

from dal.errors import GenerationError, GeneratorUnavailable
from dal.records import GeneratedImage, GenerationRequest
from dal.telemetry import span
from gpu_worker.batching import BatchingGenerator, _Lanes, _Pending
from tests.concurrent_callers import concurrently
from tests.fakes import PatternGenerator

WAIT_S = 10.0


def request(prompt: str, *, seeds: tuple[int, ...] = (1,), width: int = 64, steps: int = 3):
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=None,
        width=width,
        height=64,
        num_inference_steps=steps,
        guidance_scale=1.0,
        seeds=seeds,
    )


@pytest.fixture
def engine() -> PatternGenerator:
    return PatternGenerator()


@pytest.fixture
def batcher(engine: PatternGenerator) -> Iterator[BatchingGenerator]:
    generator = BatchingGenerator(engine, max_batch_images=4, max_wait_s=0.2)
    yield generator
    generator.close()


class TestBatching:
    def test_concurrent_compatible_requests_share_one_call(self, batcher, engine) -> None:
        """Four single-image requests arriving together run as one batch of four."""
        results = concurrently(
            batcher, [partial(batcher.generate, request(f"p{i}")) for i in range(4)]
        )
        assert [len(r) for r in results] == [1, 1, 1, 1]
        assert [len(b) for b in engine.batches] == [4]

    def test_each_caller_gets_its_own_images(self, batcher, engine) -> None:
        """Images come back to the request they belong to, in seed order."""
        results = concurrently(
            batcher,
            [
                lambda: batcher.generate(request("a", seeds=(10, 11))),
                lambda: batcher.generate(request("b", seeds=(20,))),
            ],
        )
        a, b = results
        assert [img.seed for img in a] == [10, 11]
        assert [img.seed for img in b] == [20]
        assert a == PatternGenerator().generate(request("a", seeds=(10, 11)))

    def test_batches_never_exceed_the_image_limit(self, batcher, engine) -> None:
        """Six images' worth of requests are split across batches of at most four images."""
        concurrently(
            batcher,
            [partial(batcher.generate, request(f"p{i}", seeds=(i, i + 100))) for i in range(3)],
        )
        assert all(sum(len(r.seeds) for r in b) <= 4 for b in engine.batches)
        assert sum(len(b) for b in engine.batches) == 3

    def test_incompatible_requests_run_in_separate_batches(self, batcher, engine) -> None:
        """Different sizes or step counts never share a pipeline call."""
        concurrently(
            batcher,
            [
                lambda: batcher.generate(request("a", width=64)),
                lambda: batcher.generate(request("b", width=128)),
                lambda: batcher.generate(request("c", steps=5)),
            ],
        )
        assert len(engine.batches) == 3
        for batch in engine.batches:
            assert len({(r.width, r.num_inference_steps) for r in batch}) == 1

    def test_a_lone_request_with_nobody_on_the_way_starts_at_once(self, engine) -> None:
        """No caller announced: the request does not wait for batch mates at all."""
        batcher = BatchingGenerator(engine, max_batch_images=8, max_wait_s=30.0)
        started = time.monotonic()
        with batcher.arriving():
            batcher.generate(request("alone"))
        assert time.monotonic() - started < 5.0  # far below the 30 s wait
        batcher.close()

    def test_a_batch_waits_for_a_caller_on_its_way(self, engine) -> None:
        """A caller that announced itself (it is claiming its job) is waited for."""
        batcher = BatchingGenerator(engine, max_batch_images=8, max_wait_s=30.0)
        announced = threading.Event()

        def slow_caller() -> None:
            with batcher.arriving():
                announced.set()
                time.sleep(0.3)  # claiming its job
                batcher.generate(request("late"))

        thread = threading.Thread(target=slow_caller)
        thread.start()
        announced.wait()
        batcher.generate(request("early"))
        thread.join()
        assert [sorted(r.prompt for r in b) for b in engine.batches] == [["early", "late"]]
        batcher.close()

    def test_a_caller_that_leaves_without_generating_ends_the_wait(self, engine) -> None:
        """An announced caller whose claim comes to nothing (a duplicate) releases the batch."""
        batcher = BatchingGenerator(engine, max_batch_images=8, max_wait_s=30.0)
        announced = threading.Event()

        def duplicate_delivery() -> None:
            with batcher.arriving():
                announced.set()
                time.sleep(0.2)

        thread = threading.Thread(target=duplicate_delivery)
        thread.start()
        announced.wait()
        started = time.monotonic()
        batcher.generate(request("only"))
        thread.join()
        assert 0.1 < time.monotonic() - started < 5.0
        assert [len(b) for b in engine.batches] == [1]
        batcher.close()

    def test_the_wait_for_callers_on_their_way_is_bounded(self, engine) -> None:
        """A caller that never arrives holds the batch for max_wait at most."""
        batcher = BatchingGenerator(engine, max_batch_images=8, max_wait_s=0.1)
        release = threading.Event()

        def stuck_caller() -> None:
            with batcher.arriving():
                release.wait(10)

        thread = threading.Thread(target=stuck_caller)
        thread.start()
        time.sleep(0.05)
        started = time.monotonic()
        batcher.generate(request("waits"))
        assert 0.05 < time.monotonic() - started < 5.0
        release.set()
        thread.join()
        batcher.close()

    def test_progress_is_reported_to_every_job(self, batcher) -> None:
        """Each job's step callback sees every step of the shared batch."""
        seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
        concurrently(
            batcher,
            [
                lambda: batcher.generate(request("a"), lambda s, t: seen["a"].append((s, t))),
                lambda: batcher.generate(request("b"), lambda s, t: seen["b"].append((s, t))),
            ],
        )
        assert seen["a"] == seen["b"] == [(1, 3), (2, 3), (3, 3)]

    def test_a_canceled_job_leaves_and_its_mates_finish(self, batcher, engine) -> None:
        """A step callback that raises releases only its own caller."""

        class Canceled(Exception):
            pass

        def cancel_at_two(step: int, total: int) -> None:
            if step == 2:
                raise Canceled

        results = concurrently(
            batcher,
            [
                lambda: batcher.generate(request("stays")),
                lambda: batcher.generate(request("goes"), cancel_at_two),
            ],
        )
        assert isinstance(results[1], Canceled)
        assert isinstance(results[0], list) and len(results[0]) == 1
        assert len(engine.batches) == 1

    def test_a_bad_request_does_not_fail_its_batch_mates(self, batcher, engine) -> None:
        """When a batch fails, each request is retried alone; only the bad one fails."""
        engine.poison_prompts = {"poison"}
        results = concurrently(
            batcher,
            [
                lambda: batcher.generate(request("good-1")),
                lambda: batcher.generate(request("poison")),
                lambda: batcher.generate(request("good-2")),
            ],
        )
        errors = [r for r in results if isinstance(r, GenerationError)]
        images = [r for r in results if isinstance(r, list)]
        assert len(errors) == 1 and errors[0].code == "invalid_parameters"
        assert len(images) == 2
        assert all(isinstance(i[0], GeneratedImage) for i in images)

    def test_a_transient_failure_reaches_every_caller(self, batcher, engine) -> None:
        """An error that is not about one request (out of memory alone) fails each request."""
        engine.fail_with = GenerationError("out_of_memory", "OOM", retryable=True)
        results = concurrently(batcher, [lambda: batcher.generate(request("x")) for _ in range(2)])
        assert all(isinstance(r, GenerationError) and r.retryable for r in results)

    def test_close_refuses_new_work(self, engine) -> None:
        """After close, generate raises a retryable error instead of hanging."""
        batcher = BatchingGenerator(engine)
        batcher.close()
        with pytest.raises(GenerationError) as raised:
            batcher.generate(request("late"))
        assert raised.value.retryable


class TestReadiness:
    def test_ready_while_its_engine_is(self, batcher) -> None:
        batcher.check_ready()

    def test_the_engines_reason_comes_through(self, batcher, engine) -> None:
        engine.unavailable = "the pipeline process crashed 3 times in the last 5 minutes"
        with pytest.raises(GeneratorUnavailable) as raised:
            batcher.check_ready()
        assert raised.value.reason == engine.unavailable

    def test_closed_it_is_not_ready_and_has_closed_its_engine(self, engine) -> None:
        batcher = BatchingGenerator(engine)
        batcher.close()
        with pytest.raises(GeneratorUnavailable) as raised:
            batcher.check_ready()
        assert raised.value.reason == "the batcher has stopped"
        assert engine.closed


class QueuedEngine(PatternGenerator):
    """Runs calls one at a time, as the pipeline process does, but accepts a second one while
    the first runs (max_in_flight = 2); records what happened in order."""

    max_in_flight = 2

    def __init__(self) -> None:
        super().__init__()
        self._serial = threading.Lock()
        self._count = threading.Lock()
        self.events: list[tuple[str, int]] = []
        self.outstanding = 0
        self.most_outstanding = 0
        self.handed = 0

    def generate_batch(self, requests, on_step=None):
        with self._count:
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
            number = self.handed
            self.handed += 1
            self.events.append(("handed over", number))
        try:
            with self._serial:

                def step(done: int, total: int) -> None:
                    time.sleep(0.02)
                    if done == total:
                        self.events.append(("last step", number))
                    if on_step is not None:
                        on_step(done, total)

                images = super().generate_batch(requests, step)
                time.sleep(0.1)  # decoding after the last step: the next batch is handed over
                return images
        finally:
            with self._count:
                self.outstanding -= 1


class ThreadRecordingEngine(QueuedEngine):
    """A QueuedEngine that notes the thread each batch runs on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[threading.Thread] = set()
        self.thread_per_batch: list[threading.Thread] = []

    def generate_batch(self, requests, on_step=None):
        self.threads.add(threading.current_thread())
        self.thread_per_batch.append(threading.current_thread())
        return super().generate_batch(requests, on_step)


class TestAnUnexpectedError:
    @pytest.mark.parametrize("engine_kind", [PatternGenerator, QueuedEngine])
    def test_outside_the_engine_call_fails_its_batch_and_the_next_batch_runs(
        self, engine_kind: type[PatternGenerator], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A surprise around the engine call (here the batch's span) answers the batch's
        caller with it, not with a wait for ever, and the batcher (with or without lanes)
        runs the next batch."""
        surprises = iter([RuntimeError("tracing broke")])

        def flaky_span(*args, **kwargs):
            surprise = next(surprises, None)
            if surprise is not None:
                raise surprise
            return span(*args, **kwargs)

        monkeypatch.setattr("gpu_worker.batching.span", flaky_span)
        batcher = BatchingGenerator(engine_kind(), max_batch_images=1, max_wait_s=0.0)
        try:
            with pytest.raises(RuntimeError, match="tracing broke"):
                batcher.generate(request("first"))
            assert len(batcher.generate(request("second"))) == 1
        finally:
            batcher.close()


class TestHandOver:
    def test_the_next_batch_is_handed_over_while_the_current_one_finishes(self) -> None:
        """With an engine that queues calls, the batcher hands over the next batch once the
        running one has done its last step: never more than two outstanding, and every job
        still gets its own images."""
        engine = QueuedEngine()
        batcher = BatchingGenerator(engine, max_batch_images=2, max_wait_s=0.5)
        results = concurrently(
            batcher, [partial(batcher.generate, request(f"p{i}")) for i in range(8)]
        )
        batcher.close()
        assert sorted(r[0].seed for r in results) == [1] * 8
        assert [r[0] for r in results] == [
            PatternGenerator().generate(request(f"p{i}"))[0] for i in range(8)
        ]
        assert engine.most_outstanding == 2
        assert engine.handed == len(engine.batches) >= 4
        # Batch n+1 is handed over only after batch n reached its last step.
        for n in range(1, engine.handed):
            handed_over = engine.events.index(("handed over", n))
            assert engine.events.index(("last step", n - 1)) < handed_over, engine.events

    def test_batches_run_on_lanes_kept_between_batches(self) -> None:
        """No thread is started per batch: however many batches run, they run on as many
        lanes as the engine takes calls at once (which stop when the batcher closes), or on
        the thread of a caller whose request made a batch of one at once."""
        engine = ThreadRecordingEngine()
        batcher = BatchingGenerator(engine, max_batch_images=1, max_wait_s=0.0)
        callers: set[threading.Thread] = set()

        def generate(prompt: str) -> list[GeneratedImage]:
            callers.add(threading.current_thread())
            return batcher.generate(request(prompt))

        concurrently(batcher, [partial(generate, f"p{i}") for i in range(6)])
        assert len(engine.batches) == 6
        lanes = {thread for thread in engine.threads if thread not in callers}
        assert 1 <= len(lanes) <= QueuedEngine.max_in_flight
        assert all(thread.name.startswith("batcher-lane") for thread in lanes)
        batcher.close()
        assert not any(thread.is_alive() for thread in lanes)

    def test_a_lone_callers_batches_run_on_its_own_thread(self) -> None:
        """A request with nothing waiting before it and nobody on the way is the batch the
        dispatcher would form at once: it runs on its caller's thread, with no hand-over to
        a lane and back."""
        engine = ThreadRecordingEngine()
        batcher = BatchingGenerator(engine, max_batch_images=4, max_wait_s=0.5)
        try:
            for i in range(5):
                with batcher.arriving():
                    assert len(batcher.generate(request(f"p{i}"))) == 1
        finally:
            batcher.close()
        assert engine.thread_per_batch == [threading.current_thread()] * 5

    def test_a_request_behind_a_running_batch_of_one_waits_for_its_last_step(self) -> None:
        """The batch a caller runs itself is a batch like any other: the next one is handed
        over only once it has done its last step, and gathers what arrived meanwhile."""
        engine = QueuedEngine()
        # A wait long enough for a late caller that has announced itself but not yet asked.
        batcher = BatchingGenerator(engine, max_batch_images=4, max_wait_s=0.5)
        try:
            first = threading.Thread(target=batcher.generate, args=(request("first"),))
            first.start()
            while engine.handed < 1:
                time.sleep(0.001)
            late = concurrently(
                batcher, [partial(batcher.generate, request(f"p{i}")) for i in range(3)]
            )
            first.join(WAIT_S)
        finally:
            batcher.close()
        assert [len(images) for images in late] == [1, 1, 1]
        assert engine.events.index(("last step", 0)) < engine.events.index(("handed over", 1))
        assert [len(batch) for batch in engine.batches] == [1, 3]

    def test_close_waits_for_a_batch_running_on_its_callers_thread(self) -> None:
        """The engine closes only once a batch a caller runs itself has ended."""
        engine = QueuedEngine()
        batcher = BatchingGenerator(engine, max_batch_images=1, max_wait_s=0.0)
        results: list[list[GeneratedImage]] = []
        caller = threading.Thread(
            target=lambda: results.append(batcher.generate(request("running")))
        )
        caller.start()
        while engine.handed < 1:
            time.sleep(0.001)
        batcher.close()
        assert not engine.outstanding
        caller.join(WAIT_S)
        assert [len(images) for images in results] == [1]

    def test_one_batch_at_a_time_keeps_to_the_lane_that_went_idle_last(self) -> None:
        """Batches handed over one at a time stay on one warm lane instead of the lanes taking
        turns. A batch may still go to the other lane when it is handed over before the last
        one's lane is idle again, hence most, not all (in turn it would be half)."""
        ran_on: list[threading.Thread] = []
        done = threading.Event()

        def run(_batch: list[_Pending], _number: int) -> None:
            ran_on.append(threading.current_thread())
            done.set()

        lanes = _Lanes(2, run)
        for number in range(20):
            done.clear()
            lanes.run([], number)
            done.wait(WAIT_S)
            time.sleep(0.005)
        lanes.close(WAIT_S)
        counts = Counter(ran_on)
        assert len(ran_on) == 20
        assert max(counts.values()) >= 16, counts

    def test_batches_waiting_when_the_lanes_close_still_run(self) -> None:
        """close() lets every batch handed over before it run: the one running and those
        waiting for a lane."""
        release = threading.Event()
        ran: list[int] = []

        def run(_batch: list[_Pending], number: int) -> None:
            release.wait(WAIT_S)
            ran.append(number)

        lanes = _Lanes(1, run)
        for number in range(3):
            lanes.run([], number)
        closing = threading.Thread(target=lanes.close, args=(WAIT_S,))
        closing.start()
        release.set()
        closing.join(WAIT_S)
        assert not closing.is_alive()
        assert ran == [0, 1, 2]

    def test_an_engine_without_a_queue_gets_one_call_at_a_time(self, engine) -> None:
        batcher = BatchingGenerator(engine, max_batch_images=2, max_wait_s=0.5)
        active = {"now": 0, "most": 0}
        lock = threading.Lock()
        original = engine.generate_batch

        def counting(requests, on_step=None):
            with lock:
                active["now"] += 1
                active["most"] = max(active["most"], active["now"])
            try:
                time.sleep(0.01)
                return original(requests, on_step)
            finally:
                with lock:
                    active["now"] -= 1

        engine.generate_batch = counting
        concurrently(batcher, [partial(batcher.generate, request(f"p{i}")) for i in range(6)])
        batcher.close()
        assert active["most"] == 1
