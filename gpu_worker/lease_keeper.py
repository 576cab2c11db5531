"""One thread that renews the leases of every job a runner holds.

A claimed job's lease must be renewed by time, not by the pipeline's steps: a worker in one
long step, decoding or uploading, still holds its job (gpu_worker/progress.py). That used to
take a thread per job, started at the claim and joined at the end, which cost a small job more
CPU (about 0.17 ms on the 2-core build machine) than renewing its lease ever did (issue 19).
Here one thread serves every job the runner holds, and stops itself when it has had nothing to
renew for a whole interval, so an idle worker keeps no thread for it.

Renewals run one after another on that thread. They all go to the same job store, so a store
slow for one job is slow for all of them; a lease outlives a missed renewal (JOB_LEASE_S is
three heartbeats by default), and the next round tries again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

Renew = Callable[[], bool]
"""Renews one lease; False once the job has no lease to keep (it left `running`)."""


@dataclass
class _Held:
    renew: Renew
    released: bool = False


class LeaseKeeper:
    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._interval_s = interval_s
        self._held = 0
        self._due: list[tuple[float, int, _Held]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def keep(self, renew: Renew) -> Iterator[None]:
        """Call `renew` every interval while the block runs (the first time one interval
        after it starts), until the block ends or `renew` says there is nothing to keep."""
        held = _Held(renew)
        with self._cond:
            heapq.heappush(
                self._due, (time.monotonic() + self._interval_s, next(self._order), held)
            )
            self._held += 1
            # The keeper is not woken (issue 19): it never sleeps past one interval from when
            # it went to sleep (the lease due first, or the end of its idle wait), and this
            # lease is due a whole interval from now, so it wakes in time for it anyway.
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            # A renewal already under way may still finish; none starts after this.
            with self._cond:
                held.released = True
                self._held -= 1
                # Let go of the job's reporter now, not when its lease would have fallen due:
                # with one job at a time its lease is the first due, so the heap stays as
                # small as the leases held.
                self._drop_released()

    @property
    def held(self) -> int:
        """Leases kept now."""
        with self._cond:
            return self._held

    def _loop(self) -> None:
        while True:
            with self._cond:
                held = self._next_due()
                if held is None:
                    self._thread = None
                    return
            if self._renew(held):
                with self._cond:
                    if not held.released:
                        due = time.monotonic() + self._interval_s
                        heapq.heappush(self._due, (due, next(self._order), held))

    @staticmethod
    def _renew(held: _Held) -> bool:
        try:
            return held.renew()
        except Exception:
            # One job's surprise must not stop the renewals of the others: this lease is let
            # go (the sweeper takes its job back once it lapses), the rest go on.
            log.exception("could not renew a lease; it will lapse")
            return False

    def _next_due(self) -> _Held | None:
        """The next lease to renew, once it is due; None after an interval with none held.
        Called with the lock held."""
        idle_since: float | None = None
        while True:
            self._drop_released()
            now = time.monotonic()
            if self._due:
                idle_since = None
                due, _, held = self._due[0]
                if due <= now:
                    heapq.heappop(self._due)
                    return held
                self._cond.wait(due - now)
                continue
            if idle_since is None:
                idle_since = now
            elif now - idle_since >= self._interval_s:
                return None
            self._cond.wait(self._interval_s - (now - idle_since))

    def _drop_released(self) -> None:
        """Pop the released leases at the front of the heap. Called with the lock held."""
        while self._due and self._due[0][2].released:
            heapq.heappop(self._due)
