"""Per-step progress for a running job, written at a bounded rate, doubling as the cancel check;
and the heartbeat that keeps the job's lease while the worker lives."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dal.errors import JobCanceled, StoreUnavailable
from dal.ports import JobStore
from dal.records import Job, JobStatus

log = logging.getLogger(__name__)


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
        self._progress = 0.0
        # Step writes and heartbeats write the same field: one at a time, so that progress
        # never goes back.
        self._writing = threading.Lock()
        self._left_running = False

    def __call__(self, step: int, total: int) -> None:
        now = self._clock()
        # The last step is not written: the final transition sets progress to 1 with the images.
        if self._left_running:  # seen by a heartbeat
            raise JobCanceled(self._job_id)
        if step < total and now - self._last_write >= self._write_interval_s:
            self._last_write = self._last_check = now
            # Keep a little headroom below 1.0: decoding and storing still follow.
            job = self._write(round(0.95 * step / total, 4))
        elif now - self._last_check >= self._check_interval_s:
            self._last_check = now
            job = self._store.get(self._job_id)
        else:
            return
        if job.status != JobStatus.RUNNING:
            raise JobCanceled(self._job_id)

    def _write(self, progress: float) -> Job:
        with self._writing:
            self._progress = max(self._progress, progress)
            # Each write also renews the claim's lease, proving this worker is alive.
            return self._store.record_progress(self._job_id, self._progress, lease_s=self._lease_s)

    def renew_lease(self) -> bool:
        """A heartbeat: renew the job's lease (the `LeaseKeeper` calls it on its own thread,
        whatever the pipeline is doing: a long step, decoding, storing the images), so a worker
        that lives keeps its job and one that dies loses it to the sweeper within JOB_LEASE_S.
        False once the job has left `running` (canceled, or taken back): the next step callback
        then stops the pipeline."""
        try:
            job = self._write(self._progress)
        except StoreUnavailable as exc:
            # The next beat tries again; a lease outlives one missed renewal.
            log.warning("job %s: could not renew its lease: %s", self._job_id, exc)
            return True
        if job.status != JobStatus.RUNNING:
            self._left_running = True
            return False
        return True
