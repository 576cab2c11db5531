from __future__ import annotations

import threading
from collections import deque

from dal.errors import QueueUnavailable
from dal.records import Job


class MemoryJobQueue:
    """Holds enqueued job ids until someone takes them. Set `available = False` to make
    enqueue fail as a broker outage would."""

    def __init__(self) -> None:
        self._pending: deque[str] = deque()
        self._lock = threading.Lock()
        self.available = True

    def enqueue(self, job: Job) -> None:
        if not self.available:
            raise QueueUnavailable("queue is unavailable")
        with self._lock:
            self._pending.append(job.id)

    def take_all(self) -> list[str]:
        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
            return taken

    @property
    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)
