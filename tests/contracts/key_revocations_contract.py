"""The KeyRevocations contract: a revocation announced by one process moves the epoch that
every other process of the deployment reads, and nothing else moves it. Run against each
adapter (in-process and the SQLite marker here, Redis on a real server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator

import pytest

from dal.ports import KeyRevocations

# Two views of one channel: the process that revokes (the admin command) and one that
# keeps verified keys (an API process). For the in-process adapter they are one object.
Pair = tuple[KeyRevocations, KeyRevocations]


def moved_from(listener: KeyRevocations, before: Hashable | None, timeout: float = 2.0) -> bool:
    """Whether the listener's epoch leaves `before` within `timeout` (pub/sub delivery is
    asynchronous; the in-process and file adapters move at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listener.epoch() != before:
            return True
        time.sleep(0.005)
    return False


class KeyRevocationsContract:
    """Subclasses provide `pair`: the revoking side and a listening side of a fresh channel."""

    @pytest.fixture
    def pair(self) -> Pair:
        raise NotImplementedError

    @pytest.fixture
    def listening(self, pair: Pair) -> Iterator[Pair]:
        stops: list[Callable[[], None]] = [pair[1].listen()]
        yield pair
        for stop in stops:
            stop()

    def test_a_listener_can_vouch_once_listening(self, listening: Pair) -> None:
        _, listener = listening
        assert listener.epoch() is not None

    def test_the_epoch_holds_while_nothing_is_revoked(self, listening: Pair) -> None:
        _, listener = listening
        first = listener.epoch()
        time.sleep(0.05)
        assert listener.epoch() == first

    def test_a_revocation_moves_the_listeners_epoch(self, listening: Pair) -> None:
        revoker, listener = listening
        before = listener.epoch()
        revoker.announce()
        assert moved_from(listener, before)

    def test_no_two_revocations_bring_an_epoch_back(self, listening: Pair) -> None:
        """Every revocation gives an epoch never seen before, or an entry kept in an old
        epoch could come back to life."""
        revoker, listener = listening
        seen = [listener.epoch()]
        for _ in range(5):
            revoker.announce()
            assert moved_from(listener, seen[-1])
            seen.append(listener.epoch())
        assert len(set(seen)) == len(seen)
