"""Job events within one process: every subscriber hears every job that ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dal.errors import StoreUnavailable

log = logging.getLogger(__name__)


class MemoryJobEvents:
    """Delivers on the publisher's thread, to each subscriber in turn; a subscriber that
    raises is logged and does not stop the others. Set `available = False` to make publishing
    fail as a bus outage would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[str], None]] = []
        self.available = True

    def publish_finished(self, job_id: str) -> None:
        if not self.available:
            raise StoreUnavailable("job events are unavailable")
        with self._lock:
            subscribers = list(self._subscribers)
        for on_finished in subscribers:
            try:
                on_finished(job_id)
            except Exception:
                log.exception("a job-events subscriber failed on job %s", job_id)

    def subscribe(self, on_finished: Callable[[str], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(on_finished)

        def stop() -> None:
            with self._lock:
                if on_finished in self._subscribers:
                    self._subscribers.remove(on_finished)

        return stop
