"""Long polling (`Prefer: wait=N`, RFC 7240) without busy loops.

Where jobs run in this process (the inline queue), the finisher calls `notify` with the ended
record when a job ends: waiting requests wake at once and answer it without reading the store
again. Where they run elsewhere (Pub/Sub, Celery workers), the job-events bus names the job
(`notify` with its id alone) and waiters re-read the store, as they also do every
`poll_interval_s`, so the answer is right on every profile.

A waiter reads the job first and waits only if it has not ended; a notice that comes between
that read and the wait would find nobody to wake, and the request would sleep until its next
poll (half a second by default) with the answer already there. So every notice is kept for a
while, and a wait says when the read it follows began (`since`): a notice kept from that moment
on wakes it at once. A notice always follows the store's write (the finisher writes, then
notifies; the bus publishes after the write), so a read that began after a notice saw the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

from dal.records import Job

# A read and the wait after it are milliseconds apart (a stream's frames to a slow client may
# take longer): a notice is kept a minute, and the newest 4,096 of them, seconds' worth where
# thousands of jobs end a second.
NOTICE_KEPT_S = 60.0
NOTICES_KEPT = 4096


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
        # job id -> (when it was heard, its Wake), oldest first.
        self._notices: OrderedDict[str, tuple[float, Wake]] = OrderedDict()

    def notify(self, job_id: str, ended: Job | None = None) -> None:
        """Wake every request waiting on this job, handing them its `ended` record where the
        caller has it, and keep the notice for those about to wait; safe to call from any
        thread."""
        wake = Wake(ended)
        now = time.monotonic()
        with self._lock:
            waiters = self._waiters.pop(job_id, [])
            self._notices.pop(job_id, None)
            self._notices[job_id] = (now, wake)
            while self._notices and (
                len(self._notices) > NOTICES_KEPT
                or next(iter(self._notices.values()))[0] < now - NOTICE_KEPT_S
            ):
                self._notices.popitem(last=False)
        for woken in waiters:
            loop = woken.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, woken, wake)

    async def wait(self, job_id: str, seconds: float, *, since: float) -> Wake | None:
        """Until `notify(job_id)` (its Wake) or the timeout (None). `since`: when the caller's
        last read of the job began (`time.monotonic()`); a notice heard since then wakes at
        once."""
        # A future and a timer, not asyncio.wait_for on an Event: that wraps the wait in a
        # task of its own, a cost every long poll paid (issue 19).
        loop = asyncio.get_running_loop()
        entry: _Woken = loop.create_future()
        with self._lock:
            heard = self._notices.get(job_id)
            if heard is not None and heard[0] >= since:
                return heard[1]
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
