"""LastIdleFirst (dal/handoff.py): items in the order they were put, to the taker idle last."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dal.handoff import LastIdleFirst

WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def idle_takers(handoff: LastIdleFirst[int]) -> int:
    with handoff._lock:
        return len(handoff._idle)


def test_items_put_with_nobody_idle_are_taken_in_order() -> None:
    handoff: LastIdleFirst[int] = LastIdleFirst()
    for item in (1, 2, 3):
        assert handoff.put(item)
    assert [handoff.take(), handoff.take(), handoff.take()] == [1, 2, 3]


def test_the_taker_idle_last_gets_the_next_item() -> None:
    handoff: LastIdleFirst[int] = LastIdleFirst()
    got: dict[str, int | None] = {}

    def taker(name: str) -> None:
        got[name] = handoff.take()

    first = threading.Thread(target=taker, args=("first",))
    first.start()
    wait_until(lambda: idle_takers(handoff) == 1)
    second = threading.Thread(target=taker, args=("second",))
    second.start()
    wait_until(lambda: idle_takers(handoff) == 2)
    handoff.put(7)
    second.join(WAIT_S)
    assert got == {"second": 7}
    handoff.put(8)
    first.join(WAIT_S)
    assert got == {"second": 7, "first": 8}


def test_close_wakes_idle_takers_with_none_and_refuses_items() -> None:
    handoff: LastIdleFirst[int] = LastIdleFirst()
    got: list[int | None] = []
    taker = threading.Thread(target=lambda: got.append(handoff.take()))
    taker.start()
    wait_until(lambda: idle_takers(handoff) == 1)
    assert handoff.close(drop_waiting=True) == 0
    taker.join(WAIT_S)
    assert got == [None]
    assert not handoff.put(1)
    assert handoff.take() is None


def test_close_drops_waiting_items_or_leaves_them_to_be_taken() -> None:
    dropping: LastIdleFirst[int] = LastIdleFirst()
    keeping: LastIdleFirst[int] = LastIdleFirst()
    for handoff in (dropping, keeping):
        handoff.put(1)
        handoff.put(2)
    assert dropping.close(drop_waiting=True) == 2
    assert dropping.take() is None
    assert keeping.close(drop_waiting=False) == 0
    assert [keeping.take(), keeping.take(), keeping.take()] == [1, 2, None]
