"""The submit lane: blocking calls off the event loop, on one thread of its own where submits
stay in process, else on the shared threadpool; the request's context goes along either way."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from api.submit_lane import SubmitLane

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def where_and_who(tag: str) -> tuple[str, int, str | None, str]:
    return threading.current_thread().name, threading.get_ident(), request_id.get(), tag


async def run_many(lane: SubmitLane, count: int) -> list[tuple[str, int, str | None, str]]:
    async def one(i: int) -> tuple[str, int, str | None, str]:
        request_id.set(f"request-{i}")  # each task has a context of its own
        return await lane.run(where_and_who, f"call-{i}")

    return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.parametrize("own_thread", [True, False])
def test_each_call_sees_its_own_requests_context_and_gets_its_own_answer(own_thread: bool) -> None:
    lane = SubmitLane(own_thread=own_thread)
    try:
        answers = asyncio.run(run_many(lane, 16))
    finally:
        lane.close()
    assert [(rid, tag) for _, _, rid, tag in answers] == [
        (f"request-{i}", f"call-{i}") for i in range(16)
    ]
    assert all(ident != threading.get_ident() for _, ident, _, _ in answers)  # off the loop


def test_its_own_thread_takes_every_call_in_turn() -> None:
    lane = SubmitLane(own_thread=True, name="submit-lane")
    try:
        answers = asyncio.run(run_many(lane, 32))
    finally:
        lane.close()
    assert lane.own_thread
    assert len({ident for _, ident, _, _ in answers}) == 1
    assert answers[0][0].startswith("submit-lane")


def test_without_its_own_thread_calls_run_on_the_shared_threadpool() -> None:
    lane = SubmitLane(own_thread=False)
    answers = asyncio.run(run_many(lane, 4))
    assert not lane.own_thread
    assert all(name.startswith("AnyIO worker") for name, _, _, _ in answers)


def test_an_error_reaches_the_awaiting_request_and_the_lane_goes_on() -> None:
    lane = SubmitLane(own_thread=True)

    def fail() -> None:
        raise LookupError("no such job")

    async def scenario() -> str:
        with pytest.raises(LookupError, match="no such job"):
            await lane.run(fail)
        return (await lane.run(where_and_who, "after"))[3]

    try:
        assert asyncio.run(scenario()) == "after"
    finally:
        lane.close()


def test_close_lets_the_calls_handed_over_finish() -> None:
    lane = SubmitLane(own_thread=True)
    release = threading.Event()
    finished: list[str] = []

    def slow() -> None:
        release.wait(5)
        finished.append("slow")

    async def hand_over() -> None:
        loop = asyncio.get_running_loop()
        pending = asyncio.ensure_future(lane.run(slow))
        await asyncio.sleep(0.05)  # handed to the lane's thread
        closing = loop.run_in_executor(None, lane.close)
        await asyncio.sleep(0.05)
        assert not closing.done()  # close waits for the call in hand
        release.set()
        await closing
        await pending

    asyncio.run(hand_over())
    assert finished == ["slow"]
