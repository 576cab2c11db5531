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
from dataclasses import dataclass, field

from dal.records import Job


@dataclass(frozen=True, slots=True)
class Wake:
    """A waiter was woken: by the finisher of this process, which hands over the `ended`
    record, or by a notice naming the job alone (`ended` is None: read the store)."""

    ended: Job | None


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    ended: Job | None = None


class JobWaits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = defaultdict(list)

    def notify(self, job_id: str, ended: Job | None = None) -> None:
        """Wake every request waiting on this job, handing them its `ended` record where the
        caller has it; safe to call from any thread."""
        with self._lock:
            waiters = self._waiters.pop(job_id, [])
        for waiter in waiters:
            waiter.ended = ended
            if not waiter.loop.is_closed():
                waiter.loop.call_soon_threadsafe(waiter.event.set)

    async def wait(self, job_id: str, seconds: float) -> Wake | None:
        """Until `notify(job_id)` (its Wake) or the timeout (None)."""
        entry = _Waiter(asyncio.get_running_loop())
        with self._lock:
            self._waiters[job_id].append(entry)
        try:
            await asyncio.wait_for(entry.event.wait(), seconds)
            return Wake(entry.ended)
        except TimeoutError:
            return None
        finally:
            with self._lock:
                remaining = self._waiters.get(job_id)
                if remaining and entry in remaining:
                    remaining.remove(entry)
                    if not remaining:
                        del self._waiters[job_id]
