"""MemoryRateLimiter: a token bucket per key, driven by an injected clock."""

from __future__ import annotations

import pytest

from dal.memory import MemoryRateLimiter


class FakeMonotonic:
    """A monotonic clock in seconds that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


def limiter(clock: FakeMonotonic, **kwargs: object) -> MemoryRateLimiter:
    options: dict[str, object] = {"limit": 5, "period_s": 10.0, "burst": 3}
    options.update(kwargs)
    return MemoryRateLimiter(clock=clock, **options)  # type: ignore[arg-type]


def test_burst_is_allowed_then_denied_with_retry_after_one_token(clock: FakeMonotonic) -> None:
    """A full bucket allows `burst` hits at once, then denies with retry_after ≈ 1/rate."""
    rl = limiter(clock)  # 0.5 tokens per second, capacity 3
    decisions = [rl.hit("alice") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert all(d.retry_after_s == 0.0 for d in decisions)

    denied = rl.hit("alice")
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.retry_after_s == pytest.approx(2.0)
    assert denied.reset_after_s == pytest.approx(6.0)


def test_decision_reports_limit_remaining_and_reset(clock: FakeMonotonic) -> None:
    """limit is the bucket size, remaining the whole tokens left, reset the time to refill."""
    first = limiter(clock).hit("alice")
    assert first.allowed
    assert first.limit == 3
    assert first.remaining == 2
    assert first.reset_after_s == pytest.approx(2.0)

    no_burst = limiter(clock, burst=None).hit("alice")
    assert no_burst.limit == 5
    assert no_burst.remaining == 4
    assert no_burst.reset_after_s == pytest.approx(2.0)


def test_bucket_refills_over_time(clock: FakeMonotonic) -> None:
    """Tokens come back at limit/period per second, and retry_after is honest about it."""
    rl = limiter(clock)
    for _ in range(3):
        rl.hit("alice")
    clock.advance(1.0)  # half a token
    denied = rl.hit("alice")
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(1.0)

    clock.advance(denied.retry_after_s)
    assert rl.hit("alice").allowed
    assert not rl.hit("alice").allowed

    clock.advance(4.0)  # two tokens
    assert [rl.hit("alice").allowed for _ in range(3)] == [True, True, False]


def test_refill_never_exceeds_the_bucket_size(clock: FakeMonotonic) -> None:
    """After a long idle period the bucket holds `burst` tokens, not more."""
    rl = limiter(clock)
    rl.hit("alice")
    clock.advance(10_000)
    decisions = [rl.hit("alice") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[0].remaining == 2


def test_denied_hits_do_not_consume_tokens(clock: FakeMonotonic) -> None:
    """Hammering a drained bucket does not push the next allowed request further away."""
    rl = limiter(clock)
    for _ in range(3):
        rl.hit("alice")
    for _ in range(10):
        assert not rl.hit("alice").allowed
    clock.advance(2.0)
    assert rl.hit("alice").allowed


def test_keys_are_independent(clock: FakeMonotonic) -> None:
    """Draining one key's bucket leaves every other key's untouched."""
    rl = limiter(clock)
    for _ in range(3):
        rl.hit("alice")
    assert not rl.hit("alice").allowed
    bob = rl.hit("bob")
    assert bob.allowed
    assert bob.remaining == 2


def test_cost_takes_several_tokens(clock: FakeMonotonic) -> None:
    """A hit with cost n takes n tokens and is denied when fewer are left."""
    rl = limiter(clock)
    first = rl.hit("alice", cost=2)
    assert first.allowed
    assert first.remaining == 1
    second = rl.hit("alice", cost=2)
    assert not second.allowed
    assert second.retry_after_s == pytest.approx(2.0)


def test_eviction_never_forgives_a_drained_bucket(clock: FakeMonotonic) -> None:
    """With the key table full, only full buckets are dropped, so limits still hold."""
    rl = limiter(clock, max_keys=1)
    for _ in range(3):
        rl.hit("alice")
    assert rl.hit("bob").allowed
    assert not rl.hit("alice").allowed


@pytest.mark.parametrize(("limit", "period_s"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
def test_non_positive_limit_or_period_is_refused(limit: int, period_s: float) -> None:
    """A limiter that could never allow anything is a configuration error."""
    with pytest.raises(ValueError):
        MemoryRateLimiter(limit=limit, period_s=period_s)
