"""When to try a webhook again: network errors, 5xx and 429 are worth another attempt, any
other answer is final. Waits double from `base_s` up to `max_s`, each drawn at random from its
upper half ("equal jitter") so receivers that failed together are not retried together."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


def is_retryable(status_code: int | None) -> bool:
    """None: no HTTP answer at all (refused, reset, timed out)."""
    return status_code is None or status_code == 429 or status_code >= 500


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 1.0
    max_s: float = 60.0
    # A draw from [0, 1); injectable so tests can pin it.
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.max_s < self.base_s:
            raise ValueError("need max_attempts >= 1 and 0 <= base_s <= max_s")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + self.jitter() * ceiling / 2

    def next_delay(self, attempt: int, status_code: int | None) -> float | None:
        """The wait before the next attempt, or None when there is none."""
        if attempt >= self.max_attempts or not is_retryable(status_code):
            return None
        return self.delay_after(attempt)
