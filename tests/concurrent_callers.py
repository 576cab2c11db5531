"""Callers that arrive at once: concurrent job runners at a batching generator, racing writers
at a store."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpu_worker.batching import BatchingGenerator


def at_once(
    calls: list[Callable[[], Any]],
    *,
    around: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> list[Any]:
    """Run `calls` on threads released together by a barrier, each inside `around()` entered
    before the barrier. An exception a call raises is returned in its place, so the test can
    look at it."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        with around():
            barrier.wait(timeout=30)
            try:
                return call()
            except Exception as exc:
                return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def concurrently(batcher: BatchingGenerator, calls: list[Callable[[], Any]]) -> list[Any]:
    """`calls` at once, each announced to the batcher first, as the job runner announces a job
    it is about to claim."""
    return at_once(calls, around=batcher.arriving)
