"""Dynamic batching: concurrent generations that can share a pipeline call run as one.

Callers (push requests on threads, inline worker threads, Celery threads) call `generate()` as
if they were alone. A dispatcher thread gathers requests with the same shape (size, steps,
guidance) until the batch holds `max_batch_images` images or the first request has waited
`max_wait_s`, runs them in one call, and hands each caller its own images.

It waits only for requests known to be on their way: a caller announces itself with
`arriving()` as soon as it has a job (before claiming it), and `generate()` ends the
announcement. With nobody announced, a request starts at once: a lone client pays no batching
wait, while under load (or a burst of deliveries) batches still fill. A request that would
make a batch of one at once (nothing waiting, nobody on the way, a call free) runs on its
caller's thread as that batch: the same call, with no hand-over to the dispatcher and a lane
and back (issue 19).

Per job, as if unbatched:
- progress: each caller's step callback is called with the batch's steps;
- cancel: a callback that raises releases its caller at once with that exception; the batch
  goes on for the others (and stops early if nobody is left);
- failure: a request the engine rejects up front fails alone; if a whole batch fails (invalid
  input, out of memory), each request is retried on its own, so one bad job does not fail its
  batch mates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from dal.errors import GenerationError, GeneratorUnavailable
from dal.handoff import LastIdleFirst
from dal.records import GeneratedImage, GenerationRequest, StepCallback
from dal.telemetry import current_job_ids, job_context, span
from dal.telemetry.metrics import record_batch, record_failed_batch, record_stopped_batch
from dal.trace_context import current_traceparent, set_traceparent

log = logging.getLogger(__name__)


class BatchEngine(Protocol):
    """What the batcher drives: the in-process `DiffusionEngine` or the `EngineProcess`."""

    @property
    def model_id(self) -> str: ...

    @property
    def default_size(self) -> tuple[int, int]: ...

    @property
    def max_in_flight(self) -> int:
        """Calls it accepts at once. One runs them one at a time; more lets the batcher hand
        over the next batch while the current one finishes (the engine queues it)."""
        ...

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[list[GeneratedImage]]: ...

    def check_ready(self) -> None:
        """Raises GeneratorUnavailable, saying why, when generate_batch() cannot work now;
        cheap (every readiness probe calls it), never starts or waits for anything."""
        ...

    def close(self) -> None:
        """Release the model (and its process, if it has one)."""
        ...


class _EveryoneLeft(Exception):
    """Every request of the running batch was canceled: stop the pipeline."""


@dataclass
class _Pending:
    request: GenerationRequest
    on_step: StepCallback | None
    enqueued_at: float
    future: Future[list[GeneratedImage]] = field(default_factory=Future)
    dropped: bool = False
    # The caller's job and trace: the dispatcher thread logs and traces on their behalf.
    job_ids: tuple[str, ...] = field(default_factory=current_job_ids)
    traceparent: str | None = field(default_factory=current_traceparent)


class _Lanes:
    """Threads that run handed-over batches, started once and kept. Daemon threads, like the
    batcher's own: a process that exits without closing its batcher is not held up by a lane
    waiting on its engine. With none, a batch runs on the thread that hands it over.

    The lane that went idle last takes the next batch (dal/handoff.py), as the inline queue's
    workers do: handed out in turn, a lone client's batches alternated between the lanes, each
    finding its stack and objects gone cold since its last batch (issue 19). Batches handed
    over while every lane is busy wait in order."""

    def __init__(self, count: int, run: Callable[[list[_Pending], int], None]) -> None:
        self._run = run
        self._handoff: LastIdleFirst[tuple[list[_Pending], int]] = LastIdleFirst()
        self._threads = [
            threading.Thread(target=self._serve, name=f"batcher-lane-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, batch: list[_Pending], number: int) -> None:
        if not self._threads:
            self._run(batch, number)
            return
        self._handoff.put((batch, number))

    def close(self, timeout: float) -> None:
        """Stop the lanes once the batches handed to them have run, waiting up to `timeout`
        seconds for each."""
        self._handoff.close(drop_waiting=False)
        for thread in self._threads:
            thread.join(timeout)

    def _serve(self) -> None:
        while (work := self._handoff.take()) is not None:
            self._run(*work)


class BatchingGenerator:
    def __init__(
        self,
        engine: BatchEngine,
        *,
        max_batch_images: int = 8,
        max_wait_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_images < 1:
            raise ValueError("max_batch_images must be at least 1")
        self._engine = engine
        self._max_images = max_batch_images
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._pending: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._arriving = 0
        self._announced = threading.local()
        # An engine that queues calls (EngineProcess) takes the next batch while the current one
        # finishes; it is formed once the current one has done its last step, so it still
        # gathers as many jobs as it can.
        self._in_flight = max(1, engine.max_in_flight)
        self._slots = threading.BoundedSemaphore(self._in_flight)
        self._may_form = True  # guarded by _cond
        # The lanes a handed-over batch runs on: kept between batches, as starting a thread per
        # batch cost more CPU than the batcher's own work for a small job (issue 19). An engine
        # that takes one call at a time needs none: the batcher's thread runs each batch itself.
        lanes = self._in_flight if self._in_flight > 1 else 0
        self._lanes = _Lanes(lanes, self._run_in_lane)
        self._formed = 0  # batches formed so far: the newest one alone may release the next
        self._last_end = 0.0
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    # The ImageGenerator surface ------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._engine.model_id

    @property
    def default_size(self) -> tuple[int, int]:
        return self._engine.default_size

    @property
    def engine(self) -> BatchEngine:
        return self._engine

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce that this thread is about to call `generate()` (it has a job and is
        claiming it), so a batch being formed waits for it; `generate()` ends the
        announcement, and so does leaving the block without calling it."""
        with self._cond:
            self._arriving += 1
        self._announced.active = True
        try:
            yield
        finally:
            if getattr(self._announced, "active", False):
                self._announced.active = False
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[GeneratedImage]:
        pending = _Pending(request=request, on_step=on_step, enqueued_at=self._clock())
        announced = getattr(self._announced, "active", False)
        self._announced.active = False
        with self._cond:
            if announced:
                self._arriving -= 1
            if self._closed:
                raise GenerationError("shutting_down", "the worker is stopping", retryable=True)
            alone = (
                not self._pending
                and self._arriving <= 0
                and self._may_form
                and self._slots.acquire(blocking=False)
            )
            if alone:
                number = self._form()
            else:
                self._pending.append(pending)
                self._cond.notify_all()
        if alone:
            # The batch of one the dispatcher would form at once, run here (see the module's
            # docstring); its slot and the next batch are released as a lane releases them.
            self._run_in_lane([pending], number)
        return pending.future.result()

    def check_ready(self) -> None:
        if self._closed or not self._thread.is_alive():
            raise GeneratorUnavailable("the batcher has stopped")
        self._engine.check_ready()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for pending in waiting:
            pending.future.set_exception(
                GenerationError("shutting_down", "the worker is stopping", retryable=True)
            )
        self._thread.join(timeout=60)
        self._lanes.close(timeout=60)
        # Batches running on their callers' threads end too before the engine closes: each
        # holds a slot until it has.
        deadline = time.monotonic() + 60
        for _ in range(self._in_flight):
            self._slots.acquire(timeout=max(0.0, deadline - time.monotonic()))
        # The batcher owns its engine: this stops the pipeline process (EngineProcess).
        self._engine.close()

    # Dispatcher ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while self._work_waits():
            # A slot is taken only once there is a batch to form, so that an idle dispatcher
            # leaves every call free for a lone request to run on its caller's thread.
            self._slots.acquire()
            formed = self._next_batch()
            if formed is None:
                self._slots.release()
                return
            self._lanes.run(*formed)

    def _work_waits(self) -> bool:
        """Wait until a request waits and a batch may form; False once closed."""
        with self._cond:
            while not (self._pending and self._may_form):
                if self._closed:
                    return False
                self._cond.wait()
            return True

    def _form(self) -> int:
        """Count a batch formed (holding `_cond`): the next one forms once this one has done
        its last step. Its number."""
        self._formed += 1
        self._may_form = False
        return self._formed

    def _run_in_lane(self, batch: list[_Pending], number: int) -> None:
        try:
            self._run(batch, number)
        except Exception as exc:
            # Outside the engine call (its own errors are handled in _run_batch): whoever still
            # waits on this batch hears of it, and the lane goes on with the next one.
            log.exception("batch %d: unexpected error", number)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            self._release_next(number)
            self._slots.release()

    def _release_next(self, number: int) -> None:
        """Let the next batch form, if `number` is the newest batch (an older one ending or
        reaching its last step says nothing about the one after it)."""
        with self._cond:
            if number == self._formed:
                self._may_form = True
                if self._pending:
                    # Only a waiting request needs the dispatcher; a lone caller's next request
                    # finds the batch free without waking it.
                    self._cond.notify_all()

    def _next_batch(self) -> tuple[list[_Pending], int] | None:
        """The next batch, and its number; counted formed as it leaves the queue, in one hold
        of `_cond`, so that no lone request starts a batch of its own in between."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._pending[0]
            key = first.request.batch_shape
            deadline = first.enqueued_at + self._max_wait_s
            # Wait for batch mates on their way, until the batch is full or the first
            # request's wait is over.
            while self._images_for(key) < self._max_images and not self._closed:
                remaining = deadline - self._clock()
                if remaining <= 0 or self._arriving <= 0:
                    break
                self._cond.wait(timeout=remaining)
            batch: list[_Pending] = []
            images = 0
            for pending in list(self._pending):
                if pending.request.batch_shape != key:
                    continue
                size = len(pending.request.seeds)
                # A request larger than the limit still runs, alone.
                if batch and images + size > self._max_images:
                    break
                batch.append(pending)
                images += size
                self._pending.remove(pending)
            return batch, self._form()

    def _images_for(self, key: tuple[int, int, int, float]) -> int:
        return sum(len(p.request.seeds) for p in self._pending if p.request.batch_shape == key)

    def _run(self, batch: list[_Pending], number: int) -> None:
        # Lines logged for a batch list every job in it; its span continues the first job's
        # trace and links the others'.
        job_ids = tuple(job_id for pending in batch for job_id in pending.job_ids)
        traceparents = [p.traceparent for p in batch if p.traceparent]
        set_traceparent(traceparents[0] if traceparents else None)
        images = sum(len(p.request.seeds) for p in batch)
        with (
            job_context(*job_ids),
            span(
                "pipeline",
                attributes={"txt2img.batch_images": images, "txt2img.batch_jobs": len(batch)},
                links=traceparents[1:],
            ),
        ):
            self._run_batch(batch, number)

    def _run_batch(self, batch: list[_Pending], number: int) -> None:
        # A batch handed over early starts in the engine when the one before it ends.
        with self._cond:
            started = max(self._clock(), self._last_end)
        try:
            results = self._engine.generate_batch(
                [p.request for p in batch], on_step=self._dispatch_step(batch, number)
            )
        except _EveryoneLeft:
            record_stopped_batch(seconds=self._clock() - started)
            return
        except GenerationError as exc:
            record_failed_batch(seconds=self._clock() - started)
            if len(batch) > 1:
                log.warning("batch of %d failed (%s); retrying each alone", len(batch), exc.code)
                for pending in batch:
                    if not pending.dropped:
                        self._run([pending], number)
                return
            self._fail(batch, exc)
            return
        except BaseException as exc:
            record_failed_batch(seconds=self._clock() - started)
            self._fail(batch, exc)
            return
        images = sum(len(p.request.seeds) for p in batch)
        ended = self._clock()
        record_batch(images=images, seconds=ended - started)
        with self._cond:
            self._last_end = ended
        log.debug(
            "batch of %d image(s) in %.1f ms after waiting %.1f ms",
            images,
            (self._clock() - started) * 1000,
            (started - batch[0].enqueued_at) * 1000,
        )
        for pending, images_of_one in zip(batch, results, strict=True):
            if not pending.dropped:
                pending.future.set_result(images_of_one)

    def _dispatch_step(self, batch: list[_Pending], number: int) -> StepCallback:
        def on_step(step: int, total: int) -> None:
            if step >= total:
                self._release_next(number)  # decoding from here on: the next batch may form
            for pending in batch:
                if pending.dropped or pending.on_step is None:
                    continue
                try:
                    pending.on_step(step, total)
                except BaseException as exc:
                    # This job stops (canceled, or its store is down); its mates go on.
                    pending.dropped = True
                    pending.future.set_exception(exc)
            if all(p.dropped for p in batch):
                raise _EveryoneLeft

        return on_step

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.dropped:
                pending.dropped = True
                pending.future.set_exception(exc)
