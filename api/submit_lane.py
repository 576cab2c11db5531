"""Where a submit's blocking part (record the job, put it in line) runs, off the event loop.

Where a submit touches nothing but this process and a local file (a SQLite or in-memory job
store, an in-process queue and request cache: the embedded profile), its work is CPU alone,
under the GIL and behind SQLite's one writer (`dal.sql.engine.write_lock`). On the shared
threadpool, 32 submits at once take 32 threads that only queue on that lock and hand the GIL
around, a context switch at every hand-over. One thread of their own takes them in turn
instead, without sleeping between them while more wait: 7-14 % more submits per second with
32 in flight on two cores, in three interleaved rounds (docs/performance.md, issue 19).

Elsewhere a submit waits on the network (PostgreSQL, Firestore, Redis, a broker's publish),
and many at once is what keeps the rate up: those run on the shared threadpool, as every
other blocking call does.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


class SubmitLane:
    """Runs blocking calls off the event loop: on one thread of its own (`own_thread`), else
    on the shared threadpool. Either way the call sees the request's context variables (its
    trace, its log context), as a threadpool call does."""

    def __init__(self, *, own_thread: bool, name: str = "submit-lane") -> None:
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) if own_thread else None
        )

    @property
    def own_thread(self) -> bool:
        return self._executor is not None

    async def run(self, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._executor is None:
            return await run_in_threadpool(call, *args, **kwargs)
        context = contextvars.copy_context()
        bound = functools.partial(context.run, call, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, bound)

    def close(self) -> None:
        """Let the calls already handed over finish, then stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
