"""The official `openai` SDK pointed at the in-process app, and a worker thread that runs the
jobs it submits (a synchronous call holds its request until its job has ended)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from openai import OpenAI

from tests.unit.api.conftest import ALICE_KEY, ApiHarness


def openai_client(api: ApiHarness, key: str = ALICE_KEY, *, max_retries: int = 0) -> OpenAI:
    """The unmodified SDK, talking to the app through the harness's TestClient."""
    return OpenAI(
        base_url="http://testserver/v1",
        api_key=key,
        # Starlette's TestClient is an httpx2 client, which the SDK accepts (it checks for
        # httpx or httpx2 at runtime) but types as httpx.Client only.
        http_client=cast(Any, api.client),
        max_retries=max_retries,
    )


@contextmanager
def running_worker(api: ApiHarness) -> Iterator[None]:
    """Play the GPU worker in the background until the block ends."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            api.run_pending_jobs()
            stop.wait(0.01)

    thread = threading.Thread(target=work, name="test-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
