"""Weighted fair share between owners (dal/fair_share.py), by simulation: a GPU fleet with a
few slots takes the next jobs in fair order as slots free up, while owners keep submitting."""

from __future__ import annotations

import itertools
from collections import Counter, deque

import pytest

from dal.fair_share import FairShare, FairShareState, WaitingJob

ids = itertools.count()


def jobs(owner: str, count: int, cost: float = 1.0) -> list[WaitingJob]:
    return [WaitingJob(f"{owner}-{next(ids)}", owner, cost) for _ in range(count)]


def drain(share: FairShare, waiting: list[WaitingJob], state: FairShareState) -> list[str]:
    """Hand over one job at a time until nothing waits; the owners in hand-over order."""
    queue = list(waiting)
    handed: list[str] = []
    while queue:
        (job,) = share.hand_over(queue, state, 1)
        queue.remove(job)
        handed.append(job.owner)
    return handed


def test_a_newcomer_is_served_within_one_turn_not_behind_a_backlog() -> None:
    """One key submits 40 jobs, then a second key one: first come, first served would run it
    41st; fair share runs it second."""
    share, state = FairShare(), FairShareState()
    waiting = jobs("alice", 40) + jobs("bob", 1)
    order = drain(share, waiting, state)
    assert order.index("bob") <= 1


def test_the_newcomer_is_next_even_after_the_backlog_has_been_running() -> None:
    """Alice's jobs have been handed over for a while when Bob arrives: he is not charged for
    the time he was away, and Alice gets no credit for having been alone."""
    share, state = FairShare(), FairShareState()
    waiting = jobs("alice", 40)
    for job in share.hand_over(waiting, state, 10):
        waiting.remove(job)
    waiting += jobs("bob", 3)
    order = drain(share, waiting, state)
    assert order[:6].count("bob") == 3


def test_one_owners_jobs_keep_their_order() -> None:
    share, state = FairShare(), FairShareState()
    alice = jobs("alice", 5)
    waiting = [j for pair in zip(alice, jobs("bob", 5), strict=True) for j in pair]
    handed: list[str] = []
    queue = list(waiting)
    while queue:
        (job,) = share.hand_over(queue, state, 1)
        queue.remove(job)
        handed.append(job.job_id)
    assert [h for h in handed if h.startswith("alice")] == [j.job_id for j in alice]


@pytest.mark.parametrize("slots", [1, 4, 8])
def test_weights_two_to_one_share_the_gpus_two_to_one(slots: int) -> None:
    """Two keys that always have work waiting: over a window, the started counts are within
    10 % of their weights' ratio."""
    share, state = FairShare({"gold": 2, "basic": 1}), FairShareState()
    waiting = deque(jobs("gold", 50) + jobs("basic", 50))
    started: Counter[str] = Counter()
    for _ in range(600 // slots):
        for job in share.hand_over(list(waiting), state, slots):
            waiting.remove(job)
            started[job.owner] += 1
            waiting.extend(jobs(job.owner, 1))  # each keeps its backlog full
    ratio = started["gold"] / started["basic"]
    assert abs(ratio - 2) <= 0.2, started


def test_costs_share_images_not_jobs() -> None:
    """With cost = images, an owner of 4-image jobs gets a quarter of the jobs of an owner of
    1-image jobs: equal images."""
    share, state = FairShare(), FairShareState()
    waiting = jobs("batches", 30, cost=4) + jobs("singles", 120)
    images: Counter[str] = Counter()
    queue = list(waiting)
    for _ in range(60):
        (job,) = share.hand_over(queue, state, 1)
        queue.remove(job)
        images[job.owner] += int(job.cost)
    assert abs(images["batches"] - images["singles"]) <= 4, images


def test_positions_are_the_hand_over_order() -> None:
    """queue_position: how many jobs go before each one, as hand_over then takes them."""
    share, state = FairShare({"gold": 3}), FairShareState()
    waiting = jobs("basic", 6) + jobs("gold", 6) + jobs("other", 2)
    positions = share.positions(waiting, state)
    by_position = sorted(positions, key=positions.__getitem__)
    handed: list[str] = []
    queue = list(waiting)
    while queue:
        (job,) = share.hand_over(queue, state, 1)
        queue.remove(job)
        handed.append(job.job_id)
    assert handed == by_position
    assert sorted(positions.values()) == list(range(len(waiting)))


def test_a_waiting_jobs_position_only_falls_while_its_peers_keep_submitting() -> None:
    """Owners that were already waiting keep submitting; a waiting job's position never
    rises (newcomers can still go ahead of it: that is what fairness means)."""
    share, state = FairShare(), FairShareState()
    waiting = jobs("alice", 10) + jobs("bob", 10)
    watched = waiting[-1].job_id
    last = share.positions(waiting, state)[watched]
    while watched in {j.job_id for j in waiting}:
        for job in share.hand_over(waiting, state, 2):
            waiting.remove(job)
        waiting += jobs("alice", 1) + jobs("bob", 1)
        if watched in {j.job_id for j in waiting}:
            now = share.positions(waiting, state)[watched]
            assert now <= last
            last = now


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FairShare(default_weight=0)
    share = FairShare({"nobody": 0})
    with pytest.raises(ValueError, match="nobody"):
        share.order(jobs("nobody", 1), FairShareState())
