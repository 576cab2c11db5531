"""The line for the GPUs in this process's memory: the embedded profile (one process admits,
runs and ends every job) and tests. Lost with the process; the dispatcher restores it from the
job store when the process starts."""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dal.fair_share import (
    RECENT_ENDS,
    FairShareState,
    Tag,
    advance,
    check_share,
    ends_per_second,
    tag_arrival,
    withdraw,
)
from dal.ports import HandedOver, LineDepth, LinePlace, Ticket


@dataclass(frozen=True, slots=True)
class _Waiting:
    ticket: Ticket
    tag: Tag
    seq: int
    joined_at: float

    @property
    def key(self) -> tuple[float, int]:
        # Ties between owners go to the earlier arrival, as in the Redis line.
        return (self.tag.start, self.seq)


class MemoryFairLine:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = FairShareState()
        self._order: list[tuple[float, int]] = []  # keys of waiting jobs, sorted
        self._by_key: dict[tuple[float, int], _Waiting] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._handed: dict[str, float] = {}  # job id -> handed over at
        self._ends: deque[float] = deque(maxlen=RECENT_ENDS)
        self._seq = itertools.count()
        self._restored = False

    def admit(self, ticket: Ticket, *, capacity: int) -> list[HandedOver]:
        check_share(ticket.cost, ticket.weight)
        with self._lock:
            self._join(ticket, self._clock())
            return self._take(capacity)

    def take(self, *, capacity: int) -> list[HandedOver]:
        with self._lock:
            return self._take(capacity)

    def hand_over_now(self, job_id: str) -> None:
        with self._lock:
            now = self._clock()
            waiting = self._waiting.get(job_id)
            if waiting is not None:
                self._remove(waiting)
                advance(self._state, waiting.tag)
            self._handed.setdefault(job_id, now)

    def release(self, job_id: str) -> bool:
        with self._lock:
            if self._handed.pop(job_id, None) is not None:
                self._ends.append(self._clock())
                return True
            waiting = self._waiting.get(job_id)
            if waiting is not None:
                self._remove(waiting)
                withdraw(self._state, waiting.ticket.owner, waiting.tag)
            return False

    def place(self, job_id: str) -> LinePlace | None:
        with self._lock:
            waiting = self._waiting.get(job_id)
            if waiting is None:
                return None
            position = bisect.bisect_left(self._order, waiting.key)
            return LinePlace(position, ends_per_second(self._ends, self._clock()))

    def places(self, job_ids: Sequence[str]) -> dict[str, LinePlace]:
        with self._lock:
            found = {job_id: self._waiting[job_id] for job_id in job_ids if job_id in self._waiting}
            rate = ends_per_second(self._ends, self._clock())
            return {
                job_id: LinePlace(bisect.bisect_left(self._order, waiting.key), rate)
                for job_id, waiting in found.items()
            }

    def handed_over_at(self, job_id: str) -> float | None:
        with self._lock:
            return self._handed.get(job_id)

    def depth(self) -> LineDepth:
        with self._lock:
            return LineDepth(
                waiting=len(self._waiting),
                handed_over=len(self._handed),
                ends_per_s=ends_per_second(self._ends, self._clock()),
            )

    def waiting_since(self) -> dict[str, float]:
        with self._lock:
            oldest: dict[str, float] = {}
            for waiting in self._waiting.values():
                owner = waiting.ticket.owner
                oldest[owner] = min(oldest.get(owner, waiting.joined_at), waiting.joined_at)
            return oldest

    def handed_over_before(self, at: float, *, limit: int) -> list[str]:
        with self._lock:
            due = sorted((t, job_id) for job_id, t in self._handed.items() if t <= at)
            return [job_id for _, job_id in due[:limit]]

    def needs_restore(self) -> bool:
        with self._lock:
            return not self._restored

    def restore(self, waiting: Sequence[Ticket], handed_over: Sequence[str]) -> None:
        with self._lock:
            now = self._clock()
            for job_id in handed_over:
                if job_id not in self._waiting:
                    self._handed.setdefault(job_id, now)
            for ticket in waiting:
                self._join(ticket, now)
            self._restored = True

    def ping(self) -> None:
        return None

    # ---- under the lock ---------------------------------------------------------------------

    def _join(self, ticket: Ticket, now: float) -> None:
        if ticket.job_id in self._waiting or ticket.job_id in self._handed:
            return
        tag = tag_arrival(self._state, ticket.owner, cost=ticket.cost, weight=ticket.weight)
        waiting = _Waiting(ticket, tag, next(self._seq), now)
        self._waiting[ticket.job_id] = waiting
        self._by_key[waiting.key] = waiting
        bisect.insort(self._order, waiting.key)

    def _take(self, capacity: int) -> list[HandedOver]:
        now = self._clock()
        handed: list[HandedOver] = []
        while self._order and len(self._handed) < capacity:
            waiting = self._by_key[self._order[0]]
            self._remove(waiting)
            advance(self._state, waiting.tag)
            self._handed[waiting.ticket.job_id] = now
            handed.append(
                HandedOver(waiting.ticket.job_id, waiting.ticket.owner, now - waiting.joined_at)
            )
        return handed

    def _remove(self, waiting: _Waiting) -> None:
        del self._waiting[waiting.ticket.job_id]
        del self._by_key[waiting.key]
        index = bisect.bisect_left(self._order, waiting.key)
        del self._order[index]
