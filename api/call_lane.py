"""Where a request's blocking calls of one kind (a submit: record the job and put it in line; a
read of one job and its rendering) run.

Where they touch nothing but this process and a local file (a SQLite or in-memory job store, an
in-process queue, request cache and line, images this process signs itself: the embedded
profile), their work is CPU alone, under the GIL, and a write waits only behind SQLite's one
writer (`dal.sql.engine.write_lock`): they run on the event loop itself. A thread would do the
same work, and the hop to it and back costs more than the work: the loop's wake-up from another
thread (self-pipe, epoll, callback) and the caches each side finds cold. Measured interleaved
on two cores against the submit on one thread of its own and the read on the threadpool
(issue 19, docs/performance.md, "A seventh round"): a lone client's job costs 0.13-0.28 ms less
serving CPU with one round trip and about 0.5 ms less with three calls; with 32 submits in
flight, 1,177-1,250 submits/s against 857-928, at 0.78-0.82 ms of CPU each against
1.12-1.21 ms.

While such a call runs the loop serves nothing else: a fraction of a millisecond on the embedded
profile, or, should another process (an admin command) hold the database file, SQLite's busy
wait for it. Lists stay on the threadpool: a page of up to LIST_MAX_LIMIT jobs is rendered
there.

Elsewhere the calls wait on the network (PostgreSQL, Firestore, Redis, a broker's publish,
signing through IAM), and many at once is what keeps the rate up: those run on the shared
threadpool, as every other blocking call does.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


class CallLane:
    """Runs blocking calls: on the event loop (`on_loop`), else on the shared threadpool.
    Either way the call runs in a copy of the request's context variables (its trace, its log
    context), as a threadpool call does: what it sets stays its own."""

    def __init__(self, *, on_loop: bool) -> None:
        self._on_loop = on_loop

    @property
    def on_loop(self) -> bool:
        return self._on_loop

    async def run(self, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._on_loop:
            return contextvars.copy_context().run(call, *args, **kwargs)
        return await run_in_threadpool(call, *args, **kwargs)
