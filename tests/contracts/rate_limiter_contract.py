"""The RateLimiter contract: one set of cases that every RateLimiter adapter must pass.

A test module subclasses `RateLimiterContract` (as `TestXxxRateLimiter`) and provides a
`make_limiter` fixture: `make_limiter(limit, period_s, burst)` returns a fresh limiter whose
keys no other limiter shares. Time moves through the `advance` fixture, which sleeps by
default: the cases run on real time (a Redis limiter reads the server's clock). An adapter
with an injectable clock may override `advance` to move a manual clock instead.

On real time, a few milliseconds pass between two hits of one case. The buckets here refill
one token per 0.2 s, so that drift is a small fraction of a token: whole-token counts are
exact, and durations are checked to within SLACK_S.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import pytest

from dal.ports import RateLimitDecision, RateLimiter

LIMIT = 5
PERIOD_S = 1.0
BURST = 3
TOKEN_S = PERIOD_S / LIMIT  # one token every 0.2 s
# How much earlier than exact a duration may be because time passed between hits.
SLACK_S = 0.05
# Added to waits, so the awaited token has surely arrived despite clock granularity.
MARGIN_S = 0.03
# Rounding of durations an adapter reports (Redis: whole microseconds), with room to spare.
EPS_S = 1e-3


class MakeLimiter(Protocol):
    def __call__(self, limit: int, period_s: float, burst: int | None) -> RateLimiter: ...


Advance = Callable[[float], None]


class ManualMonotonic:
    """A monotonic clock in seconds that only moves when told to (for in-process adapters)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_consistent(d: RateLimitDecision, *, cost: int, token_s: float) -> None:
    """What holds for every decision: whole tokens left within the bucket, the time to refill
    matching them, and a retry time exactly when denied."""
    assert 0 <= d.remaining <= d.limit
    # remaining = floor(tokens) and reset = (limit - tokens) * token_s.
    missing = d.reset_after_s / token_s
    assert d.limit - d.remaining - 1 - EPS_S <= missing <= d.limit - d.remaining + EPS_S
    if d.allowed:
        assert d.retry_after_s == 0.0
    else:
        assert d.retry_after_s > 0.0
        if cost <= d.limit:
            assert d.retry_after_s <= d.reset_after_s + EPS_S


def hits(
    limiter: RateLimiter, key: str, n: int, *, cost: int = 1, token_s: float = TOKEN_S
) -> list[RateLimitDecision]:
    """`n` hits in a row, each checked with `assert_consistent`."""
    decisions = [limiter.hit(key, cost=cost) for _ in range(n)]
    for d in decisions:
        assert_consistent(d, cost=cost, token_s=token_s)
    return decisions


def allowed(decisions: list[RateLimitDecision]) -> list[bool]:
    return [d.allowed for d in decisions]


class RateLimiterContract:
    """Cases every RateLimiter adapter must pass; subclasses provide `make_limiter`."""

    @pytest.fixture
    def advance(self) -> Advance:
        return time.sleep

    @pytest.fixture
    def limiter(self, make_limiter: MakeLimiter) -> RateLimiter:
        """`burst` 3, refilled at 5 per second: one token per 0.2 s."""
        return make_limiter(LIMIT, PERIOD_S, BURST)

    def test_burst_is_allowed_then_denied(self, limiter: RateLimiter) -> None:
        """A full bucket allows `burst` hits at once, then denies the next one."""
        decisions = hits(limiter, "alice", 3)
        assert allowed(decisions) == [True, True, True]
        assert [d.remaining for d in decisions] == [2, 1, 0]
        assert all(d.retry_after_s == 0.0 for d in decisions)

        (denied,) = hits(limiter, "alice", 1)
        assert not denied.allowed
        assert denied.remaining == 0
        assert denied.limit == BURST

    def test_retry_after_is_the_time_to_the_next_token(
        self, limiter: RateLimiter, advance: Advance
    ) -> None:
        """retry_after is one token's refill time (less what has dripped in since), and a hit
        after waiting that long is allowed, one before it is not."""
        hits(limiter, "alice", 3)
        (denied,) = hits(limiter, "alice", 1)
        assert TOKEN_S - SLACK_S <= denied.retry_after_s <= TOKEN_S + EPS_S
        assert 3 * TOKEN_S - SLACK_S <= denied.reset_after_s <= 3 * TOKEN_S + EPS_S

        advance(denied.retry_after_s / 2)
        (early,) = hits(limiter, "alice", 1)
        assert not early.allowed
        assert early.retry_after_s <= denied.retry_after_s / 2 + EPS_S

        advance(early.retry_after_s + MARGIN_S)
        assert allowed(hits(limiter, "alice", 2)) == [True, False]

    def test_bucket_refills_over_time(self, limiter: RateLimiter, advance: Advance) -> None:
        """Tokens come back at limit/period per second."""
        hits(limiter, "alice", 3)
        advance(2 * TOKEN_S + MARGIN_S)
        assert allowed(hits(limiter, "alice", 3)) == [True, True, False]

    def test_refill_never_exceeds_the_bucket_size(
        self, make_limiter: MakeLimiter, advance: Advance
    ) -> None:
        """After an idle period long enough for many tokens the bucket holds `burst`."""
        limiter = make_limiter(20, 1.0, 2)  # a token every 0.05 s
        hits(limiter, "alice", 1, token_s=0.05)
        advance(0.3)  # six tokens' worth
        decisions = hits(limiter, "alice", 3, token_s=0.05)
        assert allowed(decisions) == [True, True, False]
        assert decisions[0].remaining == 1

    def test_denied_hits_do_not_consume_tokens(
        self, limiter: RateLimiter, advance: Advance
    ) -> None:
        """Hammering a drained bucket does not push the next allowed request further away."""
        hits(limiter, "alice", 3)
        assert not any(allowed(hits(limiter, "alice", 10)))
        advance(TOKEN_S + MARGIN_S)
        assert hits(limiter, "alice", 1)[0].allowed

    def test_keys_are_independent(self, limiter: RateLimiter) -> None:
        """Draining one key's bucket leaves every other key's untouched."""
        hits(limiter, "alice", 3)
        assert not hits(limiter, "alice", 1)[0].allowed
        (bob,) = hits(limiter, "bob", 1)
        assert bob.allowed
        assert bob.remaining == 2
        (similar,) = hits(limiter, "alice:", 1)
        assert similar.allowed

    def test_decision_reports_limit_remaining_and_reset(
        self, make_limiter: MakeLimiter, advance: Advance
    ) -> None:
        """limit is the bucket size (burst, else limit), remaining the whole tokens left,
        reset the time until the bucket is full again."""
        first = hits(make_limiter(LIMIT, PERIOD_S, BURST), "alice", 1)[0]
        assert (first.allowed, first.limit, first.remaining) == (True, 3, 2)
        assert first.reset_after_s == pytest.approx(TOKEN_S, abs=EPS_S)

        no_burst = make_limiter(LIMIT, PERIOD_S, None)
        decisions = hits(no_burst, "alice", 2)
        assert [(d.limit, d.remaining) for d in decisions] == [(5, 4), (5, 3)]
        assert decisions[1].reset_after_s == pytest.approx(2 * TOKEN_S, abs=SLACK_S)

        # Half a token back: still denied, and the times say how far each point is.
        drained = make_limiter(LIMIT, PERIOD_S, BURST)
        hits(drained, "alice", 3)
        advance(TOKEN_S / 2)
        (denied,) = hits(drained, "alice", 1)
        assert not denied.allowed
        assert denied.remaining == 0
        assert denied.retry_after_s == pytest.approx(TOKEN_S / 2, abs=SLACK_S)
        assert denied.reset_after_s == pytest.approx(2.5 * TOKEN_S, abs=SLACK_S)

    def test_cost_takes_several_tokens(self, limiter: RateLimiter) -> None:
        """A hit with cost n takes n tokens, and is denied (taking none) when fewer are left;
        retry_after then counts the missing tokens."""
        (first,) = hits(limiter, "alice", 1, cost=2)
        assert first.allowed
        assert first.remaining == 1
        (second,) = hits(limiter, "alice", 1, cost=2)
        assert not second.allowed
        assert second.remaining == 1
        assert TOKEN_S - SLACK_S <= second.retry_after_s <= TOKEN_S + EPS_S
        (third,) = hits(limiter, "alice", 1)
        assert third.allowed
        assert third.remaining == 0

    def test_cost_above_the_bucket_size_is_never_allowed(self, limiter: RateLimiter) -> None:
        (denied,) = hits(limiter, "alice", 1, cost=BURST + 1)
        assert not denied.allowed
        (after,) = hits(limiter, "alice", 1)
        assert after.allowed
        assert after.remaining == 2

    @pytest.mark.parametrize(("limit", "period_s"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
    def test_non_positive_limit_or_period_is_refused(
        self, make_limiter: MakeLimiter, limit: int, period_s: float
    ) -> None:
        """A limiter that could never allow anything is a configuration error."""
        with pytest.raises(ValueError):
            make_limiter(limit, period_s, None)
