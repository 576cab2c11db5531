"""Keep the objects a process builds at start out of the garbage collector's way.

A serving process holds a few hundred thousand objects from its start on (modules, the web
framework's routes and validators, SQLAlchemy's tables and compiled statements). CPython's
full collections walk them all, about 50 ms a pass on the 2-core build machine, and every pass
evicts the CPU caches the requests after it then refill: 0.16 ms per job on the embedded
profile (issue 19). `gc.freeze()` moves every object tracked so far into a permanent generation
that collections skip (https://docs.python.org/3/library/gc.html#gc.freeze); objects made
later, the requests' own, are collected as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Freeze what exists now, once it is built and before it serves; unfreeze at the end.

    The collection first frees the cycles start-up left behind, which a freeze would keep for
    good. Unfreezing hands the frozen objects back to the collector, so a process that builds
    and drops services more than once (the test suite) does not keep the dropped ones' cycles.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
