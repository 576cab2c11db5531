"""Hands work to a set of threads, the thread that went idle last first (issue 19).

A `queue.Queue` or `SimpleQueue` wakes the thread idle longest, so work that never overlaps
(a lone client's jobs or batches) visits every thread in turn, each finding its stack and
objects gone cold since its last item. Handing each item to the thread idle last keeps one warm
thread on it; the others wake only when items overlap. Used by the inline queue's workers
(dal/inline/job_queue.py) and the batcher's lanes (gpu_worker/batching.py).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class _Slot(Generic[T]):
    """A taking thread's slot: where an item is handed to it while it waits idle."""

    def __init__(self, lock: threading.Lock) -> None:
        self.handed: T | None = None
        self.wake = threading.Condition(lock)


class LastIdleFirst(Generic[T]):
    """Items are taken in the order they were put; idle takers get them in the opposite order
    of going idle. An item put while every taker is busy waits for the first to come back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[T] = deque()
        self._idle: list[_Slot[T]] = []  # a stack: the last to go idle is handed first
        self._slots = threading.local()
        self._closed = False

    def put(self, item: T) -> bool:
        """Hands `item` on; False, keeping nothing, once closed."""
        with self._lock:
            if self._closed:
                return False
            if self._idle:
                slot = self._idle.pop()
                slot.handed = item
                slot.wake.notify()
            else:
                self._waiting.append(item)
            return True

    def take(self) -> T | None:
        """The next item, waiting idle until there is one. None once closed and nothing is
        left waiting; an item handed over before the close is still returned."""
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            if self._closed:
                return None
            slot = self._slot()
            self._idle.append(slot)
            slot.wake.wait_for(lambda: slot.handed is not None or self._closed)
            item, slot.handed = slot.handed, None
            return item

    def close(self, *, drop_waiting: bool) -> int:
        """Take no more items and wake the idle takers. Items still waiting are dropped, or
        left for the takers to finish; returns how many were dropped."""
        with self._lock:
            self._closed = True
            dropped = len(self._waiting) if drop_waiting else 0
            if drop_waiting:
                self._waiting.clear()
            for slot in self._idle:
                slot.wake.notify()
            self._idle.clear()
            return dropped

    def _slot(self) -> _Slot[T]:
        slot: _Slot[T] | None = getattr(self._slots, "slot", None)
        if slot is None:
            slot = self._slots.slot = _Slot(self._lock)
        return slot
