"""The lease keeper: one thread renews every lease a runner holds, by time, until the job's
block ends or the job leaves `running`; it goes away when there is nothing to keep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from gpu_worker.lease_keeper import LeaseKeeper

INTERVAL_S = 0.05


def lease_keeper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lease-keeper"]


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


class Counter:
    def __init__(self, keep_going: bool = True) -> None:
        self.calls = 0
        self.keep_going = keep_going
        self.renewed = threading.Event()

    def __call__(self) -> bool:
        self.calls += 1
        self.renewed.set()
        return self.keep_going


def test_every_held_lease_is_renewed_on_one_thread_while_its_block_runs() -> None:
    keeper = LeaseKeeper(INTERVAL_S)
    first, second = Counter(), Counter()
    others = set(lease_keeper_threads())  # other runners' keepers, in this test process
    with keeper.keep(first), keeper.keep(second):
        assert keeper.held == 2
        assert wait_until(lambda: first.calls >= 3 and second.calls >= 3)
        assert len(set(lease_keeper_threads()) - others) == 1
    calls = (first.calls, second.calls)
    time.sleep(INTERVAL_S * 3)
    assert (first.calls, second.calls) == calls  # released: never renewed again
    assert keeper.held == 0


def test_the_first_renewal_waits_one_interval() -> None:
    keeper = LeaseKeeper(0.5)
    counter = Counter()
    with keeper.keep(counter):
        time.sleep(0.2)
        assert counter.calls == 0
        assert counter.renewed.wait(2)


def test_a_lease_whose_job_left_running_is_let_go_and_the_others_kept() -> None:
    keeper = LeaseKeeper(INTERVAL_S)
    gone, kept = Counter(keep_going=False), Counter()
    with keeper.keep(gone), keeper.keep(kept):
        assert wait_until(lambda: kept.calls >= 4)
        assert gone.calls == 1


def test_a_renewal_that_raises_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    keeper = LeaseKeeper(INTERVAL_S)
    kept = Counter()

    def broken() -> bool:
        raise RuntimeError("surprise")

    with keeper.keep(broken), keeper.keep(kept):
        assert wait_until(lambda: kept.calls >= 4)
    assert "could not renew a lease" in caplog.text


def test_the_thread_stops_once_idle_for_an_interval_and_comes_back_when_needed() -> None:
    keeper = LeaseKeeper(INTERVAL_S)
    others = set(lease_keeper_threads())
    with keeper.keep(Counter()):
        (mine,) = set(lease_keeper_threads()) - others
    assert wait_until(lambda: not mine.is_alive())
    again = Counter()
    with keeper.keep(again):
        assert again.renewed.wait(2)


def test_a_lease_taken_while_the_keeper_sleeps_is_renewed_one_interval_later() -> None:
    """The keeper is not woken for a lease due after the one it sleeps until (issue 19):
    that lease is still renewed on time, whether the keeper sleeps on a lease already let
    go or on nothing at all."""
    interval_s = 0.2
    keeper = LeaseKeeper(interval_s)
    with keeper.keep(Counter()):
        pass  # the keeper now sleeps until this released lease would have fallen due
    for _ in range(2):  # then again, once that one has gone and it sleeps idle
        time.sleep(interval_s / 4)
        late = Counter()
        taken = time.monotonic()
        with keeper.keep(late):
            assert late.renewed.wait(2)
            waited = time.monotonic() - taken
        assert interval_s * 0.9 <= waited < interval_s * 3


def test_a_renewal_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LeaseKeeper(0)
