from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import cast

from dal.errors import QueueUnavailable
from dal.records import Job
from dal.trace_context import current_traceparent, set_traceparent

log = logging.getLogger(__name__)

_STOP = object()


class InlineJobQueue:
    """Runs jobs on background threads inside the current process (the embedded profile).

    `run_job` gets a job id and must never raise for a job's own failure: it records the outcome
    on the job. An exception escaping it is logged and the thread goes on with the next job.
    """

    def __init__(
        self, run_job: Callable[[str], object], *, workers: int = 1, name: str = "inline-worker"
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._run_job = run_job
        self._queue: queue.Queue[object] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False
        self._closed = False
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._idle = threading.Condition(self._busy_lock)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def enqueue(self, job: Job) -> None:
        self.enqueue_id(job.id)

    def enqueue_id(self, job_id: str) -> None:
        # Under the lock, so close() cannot slip its stop markers in ahead of this job.
        with self._busy_lock:
            if self._closed:
                raise QueueUnavailable("the inline queue is shut down")
            self._busy += 1
            # With the trace of the request that submitted it, as a message attribute would.
            self._queue.put((job_id, current_traceparent()))

    @property
    def depth(self) -> int:
        """Jobs enqueued and not finished yet (waiting or running)."""
        with self._busy_lock:
            return self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every enqueued job has been run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; let running ones finish for up to `timeout` seconds. Jobs still
        waiting stay `queued` in the job store and are picked up again at the next start."""
        with self._busy_lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job_id, traceparent = cast(tuple[str, str | None], item)
            if self._closed:
                self._done()
                continue
            set_traceparent(traceparent)
            try:
                self._run_job(job_id)
            except Exception:
                log.exception("inline worker: unexpected error running job %s", job_id)
            finally:
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()
