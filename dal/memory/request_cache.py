from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dal.errors import StoreUnavailable


class MemoryRequestCache:
    """A dict with expiry. Set `available = False` to make it fail as a Redis outage would."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.available = True

    def get(self, key: str) -> str | None:
        self._check()
        with self._lock:
            return self._live(key)

    def put_if_absent(self, key: str, value: str, *, ttl_s: int) -> str | None:
        self._check()
        with self._lock:
            existing = self._live(key)
            if existing is not None:
                return existing
            self._items[key] = (value, self._clock() + ttl_s)
            return None

    def put(self, key: str, value: str, *, ttl_s: int) -> None:
        self._check()
        with self._lock:
            self._items[key] = (value, self._clock() + ttl_s)

    def delete(self, key: str) -> None:
        self._check()
        with self._lock:
            self._items.pop(key, None)

    def ping(self) -> None:
        self._check()

    def _live(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("request cache is unavailable")
