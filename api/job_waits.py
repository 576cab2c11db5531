"""Long polling (`Prefer: wait=N`, RFC 7240) without busy loops.

Where jobs run in this process (the inline queue), the finisher calls `notify` with the ended
record when a job ends: waiting requests wake at once and answer it without reading the store
again. Where they run elsewhere (Pub/Sub, Celery workers), the job-events bus names the job
(`notify` with its id alone) and waiters re-read the store, as they also do every
`poll_interval_s`, so the answer is right on every profile.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass

from dal.records import Job


@dataclass(frozen=True, slots=True)
class Wake:
    """A waiter was woken: by the finisher of this process, which hands over the `ended`
    record, or by a notice naming the job alone (`ended` is None: read the store)."""

    ended: Job | None


# A waiting request's answer, resolved on its own loop: its Wake, or None once its wait is over.
_Woken = asyncio.Future[Wake | None]


def _resolve(woken: _Woken, wake: Wake | None) -> None:
    if not woken.done():  # the other of wake and timeout came first, or the request left
        woken.set_result(wake)


class JobWaits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Woken]] = defaultdict(list)

    def notify(self, job_id: str, ended: Job | None = None) -> None:
        """Wake every request waiting on this job, handing them its `ended` record where the
        caller has it; safe to call from any thread."""
        with self._lock:
            waiters = self._waiters.pop(job_id, [])
        wake = Wake(ended)
        for woken in waiters:
            loop = woken.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, woken, wake)

    async def wait(self, job_id: str, seconds: float) -> Wake | None:
        """Until `notify(job_id)` (its Wake) or the timeout (None)."""
        # A future and a timer, not asyncio.wait_for on an Event: that wraps the wait in a
        # task of its own, a cost every long poll paid (issue 19).
        loop = asyncio.get_running_loop()
        entry: _Woken = loop.create_future()
        with self._lock:
            self._waiters[job_id].append(entry)
        timer = loop.call_later(seconds, _resolve, entry, None)
        try:
            return await entry
        finally:
            timer.cancel()
            with self._lock:
                remaining = self._waiters.get(job_id)
                if remaining and entry in remaining:
                    remaining.remove(entry)
                    if not remaining:
                        del self._waiters[job_id]
