"""The job (or jobs, for a batch) the current thread or task is working on, so that every log
line written meanwhile names them without each call site passing them along."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_job_ids: ContextVar[tuple[str, ...]] = ContextVar("job_ids", default=())


def current_job_ids() -> tuple[str, ...]:
    return _job_ids.get()


def set_job_ids(job_ids: Iterable[str]) -> None:
    """For the rest of the current context (an HTTP request's task: it ends with the request)."""
    _job_ids.set(tuple(job_ids))


@contextmanager
def job_context(*job_ids: str) -> Iterator[None]:
    """While the block runs (threads that go on to other jobs afterwards)."""
    token = _job_ids.set(tuple(job_ids))
    try:
        yield
    finally:
        _job_ids.reset(token)
