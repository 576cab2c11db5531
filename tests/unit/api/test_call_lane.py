"""A call lane: blocking calls (a submit, a read of one job) run on the event loop itself where
they stay in process, else on the shared threadpool; either way in a copy of the request's
context."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from api.call_lane import CallLane

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def where_and_who(tag: str) -> tuple[str, int, str | None, str]:
    return threading.current_thread().name, threading.get_ident(), request_id.get(), tag


async def run_many(lane: CallLane, count: int) -> list[tuple[str, int, str | None, str]]:
    async def one(i: int) -> tuple[str, int, str | None, str]:
        request_id.set(f"request-{i}")  # each task has a context of its own
        return await lane.run(where_and_who, f"call-{i}")

    return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.parametrize("on_loop", [True, False])
def test_each_call_sees_its_own_requests_context_and_gets_its_own_answer(on_loop: bool) -> None:
    lane = CallLane(on_loop=on_loop)
    answers = asyncio.run(run_many(lane, 16))
    assert [(rid, tag) for _, _, rid, tag in answers] == [
        (f"request-{i}", f"call-{i}") for i in range(16)
    ]


def test_on_the_loop_calls_run_on_the_loops_own_thread() -> None:
    lane = CallLane(on_loop=True)
    answers = asyncio.run(run_many(lane, 8))
    assert lane.on_loop
    # asyncio.run drives the loop on this thread.
    assert {ident for _, ident, _, _ in answers} == {threading.get_ident()}


def test_off_the_loop_calls_run_on_the_shared_threadpool() -> None:
    lane = CallLane(on_loop=False)
    answers = asyncio.run(run_many(lane, 4))
    assert not lane.on_loop
    assert all(name.startswith("AnyIO worker") for name, _, _, _ in answers)
    assert all(ident != threading.get_ident() for _, ident, _, _ in answers)


@pytest.mark.parametrize("on_loop", [True, False])
def test_what_a_call_sets_in_its_context_stays_its_own(on_loop: bool) -> None:
    """As on a thread: a call that names its job in the log context does not rename the
    request's (the route does that itself, with the job it gets back)."""
    lane = CallLane(on_loop=on_loop)

    def set_and_read() -> str | None:
        request_id.set("set by the call")
        return request_id.get()

    async def scenario() -> tuple[str | None, str | None]:
        request_id.set("the request's")
        inside = await lane.run(set_and_read)
        return inside, request_id.get()

    assert asyncio.run(scenario()) == ("set by the call", "the request's")


@pytest.mark.parametrize("on_loop", [True, False])
def test_an_error_reaches_the_awaiting_request_and_the_lane_goes_on(on_loop: bool) -> None:
    lane = CallLane(on_loop=on_loop)

    def fail() -> None:
        raise LookupError("no such job")

    async def scenario() -> str:
        with pytest.raises(LookupError, match="no such job"):
            await lane.run(fail)
        return (await lane.run(where_and_who, "after"))[3]

    assert asyncio.run(scenario()) == "after"
