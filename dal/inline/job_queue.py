from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dal.errors import QueueUnavailable
from dal.handoff import LastIdleFirst
from dal.records import Job
from dal.trace_context import current_traceparent, set_traceparent

log = logging.getLogger(__name__)

_Item = tuple[str, str | None]  # a job id, and the trace of the request that submitted it


class InlineJobQueue:
    """Runs jobs on background threads inside the current process (the embedded profile).

    `run_job` gets a job id and must never raise for a job's own failure: it records the outcome
    on the job. An exception escaping it is logged and the thread goes on with the next job.

    Jobs are taken in the order they were enqueued. Idle workers take them in the opposite
    order: the worker that went idle last runs the next job. A queue.Queue would wake the
    worker idle longest, so a lone client's jobs would visit every thread in turn, each with
    its stack and its objects gone cold since its last job; this way one warm thread serves
    them all, and the others only wake when jobs overlap (issue 19, dal/handoff.py).
    """

    def __init__(
        self, run_job: Callable[[str], object], *, workers: int = 1, name: str = "inline-worker"
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._run_job = run_job
        self._lock = threading.Lock()
        self._handoff: LastIdleFirst[_Item] = LastIdleFirst()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False
        self._closed = False
        self._busy = 0
        self._idle = threading.Condition(self._lock)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def enqueue(self, job: Job) -> None:
        self.enqueue_id(job.id)

    def enqueue_id(self, job_id: str) -> None:
        # With the trace of the request that submitted it, as a message attribute would.
        item = (job_id, current_traceparent())
        with self._lock:
            if self._closed:
                raise QueueUnavailable("the inline queue is shut down")
            self._busy += 1
        if not self._handoff.put(item):  # closed since the check above
            self._done()
            raise QueueUnavailable("the inline queue is shut down")

    @property
    def depth(self) -> int:
        """Jobs enqueued and not finished yet (waiting or running)."""
        with self._lock:
            return self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every enqueued job has been run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; let running ones finish for up to `timeout` seconds. Jobs still
        waiting stay `queued` in the job store and are picked up again at the next start."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._busy -= self._handoff.close(drop_waiting=True)
            self._idle.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _loop(self) -> None:
        # A job handed over before the close counts as started, and runs.
        while (item := self._handoff.take()) is not None:
            job_id, traceparent = item
            set_traceparent(traceparent)
            try:
                self._run_job(job_id)
            except Exception:
                log.exception("inline worker: unexpected error running job %s", job_id)
            finally:
                self._done()

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.notify_all()
