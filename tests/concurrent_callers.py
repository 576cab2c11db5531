"""Callers of a batching generator that arrive at once, as concurrent job runners do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpu_worker.batching import BatchingGenerator


def concurrently(batcher: BatchingGenerator, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run `calls` on threads at once, each announced to the batcher first, as the job runner
    announces a job it is about to claim. An exception a call raises is returned in its
    place, so the test can look at it."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        with batcher.arriving():
            barrier.wait()
            try:
                return call()
            except Exception as exc:
                return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))
