"""Per-step progress for a running job, written at a bounded rate, doubling as the cancel check."""

from __future__ import annotations

import time
from collections.abc import Callable

from dal.errors import JobCanceled
from dal.ports import JobStore
from dal.records import JobStatus


class ProgressReporter:
    """A StepCallback for one job.

    Writes progress no more often than `write_interval_s` (Firestore allows about one write
    per second per document), and between writes reads the job at most every
    `check_interval_s` to notice a cancel. Raises JobCanceled from inside the pipeline's step
    callback, which stops the generation.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        *,
        write_interval_s: float,
        check_interval_s: float,
        lease_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._job_id = job_id
        self._write_interval_s = write_interval_s
        self._check_interval_s = check_interval_s
        self._lease_s = lease_s
        self._clock = clock
        start = clock()
        self._last_write = start
        self._last_check = start

    def __call__(self, step: int, total: int) -> None:
        now = self._clock()
        # The last step is not written: the final transition sets progress to 1 with the images.
        if step < total and now - self._last_write >= self._write_interval_s:
            self._last_write = self._last_check = now
            # Keep a little headroom below 1.0: decoding and storing still follow.
            # Each write also renews the claim's lease, proving this worker is alive.
            job = self._store.record_progress(
                self._job_id, round(0.95 * step / total, 4), lease_s=self._lease_s
            )
        elif now - self._last_check >= self._check_interval_s:
            self._last_check = now
            job = self._store.get(self._job_id)
        else:
            return
        if job.status != JobStatus.RUNNING:
            raise JobCanceled(self._job_id)
