"""Key revocations within one process: the `test` profile's memory key store lives in the
process that serves, so a revocation only has that process to reach."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable


class LocalKeyRevocations:
    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._epoch = 0

    def announce(self) -> None:
        self._epoch = next(self._counter)

    def epoch(self) -> Hashable | None:
        return self._epoch

    def listen(self) -> Callable[[], None]:
        return _nothing_to_stop


def _nothing_to_stop() -> None:
    """Nothing runs in the background: epoch() looks for itself."""


__all__ = ["LocalKeyRevocations"]
