"""Long polling (`Prefer: wait=N`, RFC 7240) without busy loops.

Where jobs run in this process (the inline queue), the runner calls `notify` when a job ends and
waiting requests wake at once. Where they run elsewhere (Pub/Sub, Celery workers), waiters also
re-read the job store every `poll_interval_s`, so the answer is right on every profile.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class JobWaits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(list)
        )

    def notify(self, job_id: str) -> None:
        """Wake every request waiting on this job; safe to call from any thread."""
        with self._lock:
            waiters = self._waiters.pop(job_id, [])
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self, job_id: str, seconds: float) -> bool:
        """Until `notify(job_id)` or the timeout; True if notified."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters[job_id].append(entry)
        try:
            await asyncio.wait_for(event.wait(), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                remaining = self._waiters.get(job_id)
                if remaining and entry in remaining:
                    remaining.remove(entry)
                    if not remaining:
                        del self._waiters[job_id]
