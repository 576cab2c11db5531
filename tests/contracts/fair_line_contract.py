"""The FairLine contract: one set of cases that every line for the GPUs must pass (the memory
line and the Redis line), so the embedded profile and a deployment hand jobs over in the same
fair order.

A test module subclasses `FairLineContract` and provides a `line` fixture built on the `clock`
fixture's manual clock, with keys no other line shares.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque

import pytest

from dal.ports import FairLine, Ticket


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


_ids = itertools.count()


def tickets(owner: str, count: int, *, cost: float = 1.0, weight: float = 1.0) -> list[Ticket]:
    return [Ticket(f"{owner}-{next(_ids):05d}", owner, cost, weight) for _ in range(count)]


def admit_all(line: FairLine, waiting: list[Ticket], capacity: int) -> list[str]:
    handed: list[str] = []
    for ticket in waiting:
        handed += [h.job_id for h in line.admit(ticket, capacity=capacity)]
    return handed


class FairLineContract:
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    def test_with_room_a_job_is_handed_over_at_once(self, line: FairLine) -> None:
        (ticket,) = tickets("alice", 1)
        handed = line.admit(ticket, capacity=2)
        assert [(h.job_id, h.owner, h.waited_s) for h in handed] == [(ticket.job_id, "alice", 0)]
        assert line.place(ticket.job_id) is None
        depth = line.depth()
        assert (depth.waiting, depth.handed_over) == (0, 1)

    def test_at_capacity_jobs_wait_and_an_ending_lets_the_next_through(
        self, line: FairLine, clock: ManualClock
    ) -> None:
        alice = tickets("alice", 5)
        assert admit_all(line, alice, 2) == [alice[0].job_id, alice[1].job_id]
        assert [line.place(t.job_id).position for t in alice[2:]] == [0, 1, 2]  # type: ignore[union-attr]
        assert line.take(capacity=2) == []
        clock.now += 3
        assert line.release(alice[0].job_id) is True
        (next_one,) = line.take(capacity=2)
        assert (next_one.job_id, next_one.waited_s) == (alice[2].job_id, 3)
        assert line.place(alice[4].job_id).position == 1  # type: ignore[union-attr]

    def test_a_newcomer_is_next_not_behind_a_backlog(self, line: FairLine) -> None:
        """One key submits 40 jobs, then another key one: first come, first served would hand
        it over 41st; the line hands it over as soon as a slot frees."""
        alice = tickets("alice", 40)
        admit_all(line, alice, 4)
        (bob,) = tickets("bob", 1)
        assert line.admit(bob, capacity=4) == []
        assert line.place(bob.job_id).position == 0  # type: ignore[union-attr]
        line.release(alice[0].job_id)
        assert [h.job_id for h in line.take(capacity=4)] == [bob.job_id]

    def test_one_owners_jobs_keep_their_order(self, line: FairLine) -> None:
        alice, bob = tickets("alice", 6), tickets("bob", 6)
        admit_all(line, [t for pair in zip(alice, bob, strict=True) for t in pair], 0)
        handed = self._drain(line)
        assert [h for h in handed if h.startswith("alice")] == [t.job_id for t in alice]
        assert [h for h in handed if h.startswith("bob")] == [t.job_id for t in bob]

    @pytest.mark.parametrize("capacity", [1, 3, 8])
    def test_weights_two_to_one_share_the_hand_overs_two_to_one(
        self, line: FairLine, capacity: int
    ) -> None:
        """Two keys that always have work waiting: over a window, the jobs handed over (and so
        started) are within 10 % of their weights' ratio."""
        gold = deque(tickets("gold", 30, weight=2))
        basic = deque(tickets("basic", 30))
        handed = deque(admit_all(line, [*gold, *basic], capacity))
        started: Counter[str] = Counter()
        for _ in range(300):
            line.release(handed.popleft())
            for h in line.take(capacity=capacity):
                handed.append(h.job_id)
                started[h.owner] += 1
                (more,) = tickets(h.owner, 1, weight=2 if h.owner == "gold" else 1)
                line.admit(more, capacity=0)
        assert abs(started["gold"] / started["basic"] - 2) <= 0.2, started

    def test_costs_share_images_not_jobs(self, line: FairLine) -> None:
        """Cost is a job's images: an owner of 4-image jobs gets a quarter of the jobs of an
        owner of 1-image jobs, and so the same images."""
        admit_all(line, tickets("batches", 30, cost=4) + tickets("singles", 120), 0)
        images: Counter[str] = Counter()
        for _ in range(60):
            (h,) = line.take(capacity=1)
            images[h.owner] += 4 if h.owner == "batches" else 1
            line.release(h.job_id)
        assert abs(images["batches"] - images["singles"]) <= 4, images

    def test_positions_are_the_hand_over_order(self, line: FairLine) -> None:
        waiting = tickets("basic", 6) + tickets("gold", 6, weight=3) + tickets("other", 2)
        admit_all(line, waiting, 0)
        positions = {t.job_id: line.place(t.job_id).position for t in waiting}  # type: ignore[union-attr]
        assert sorted(positions.values()) == list(range(len(waiting)))
        assert self._drain(line) == sorted(positions, key=positions.__getitem__)

    def test_a_waiting_jobs_position_only_falls_while_its_peers_keep_submitting(
        self, line: FairLine
    ) -> None:
        admit_all(line, tickets("alice", 10) + tickets("bob", 10), 0)
        (watched,) = tickets("bob", 1)
        line.admit(watched, capacity=0)
        positions = []
        while (place := line.place(watched.job_id)) is not None:
            positions.append(place.position)
            for h in line.take(capacity=line.depth().handed_over + 2):
                line.release(h.job_id)
            admit_all(line, tickets("alice", 1) + tickets("bob", 1), 0)
        assert positions == sorted(positions, reverse=True) and positions[-1] >= 0
        assert len(positions) > 3

    def test_places_are_each_waiting_jobs_place_read_together(
        self, line: FairLine, clock: ManualClock
    ) -> None:
        everyone = tickets("alice", 4) + tickets("bob", 3, weight=2)
        admit_all(line, everyone, 2)
        for _ in range(2):  # two endings, so that the places carry a rate
            clock.now += 2
            line.release(line.handed_over_before(clock.now, limit=1)[0])
            line.take(capacity=2)
        ids = [t.job_id for t in everyone] + ["unknown"]
        expected = {job_id: p for job_id in ids if (p := line.place(job_id)) is not None}
        assert len(expected) == line.depth().waiting == 3
        assert all(p.ends_per_s for p in expected.values())
        assert line.places(ids) == expected
        assert line.places([*reversed(ids), *ids]) == expected
        assert line.places([everyone[0].job_id, "unknown"]) == {}  # ended, unknown
        assert line.places([]) == {}

    def test_admitting_twice_hands_over_once(self, line: FairLine) -> None:
        (ticket,) = tickets("alice", 1)
        assert len(line.admit(ticket, capacity=5)) == 1
        assert line.admit(ticket, capacity=5) == []
        (waiting,) = tickets("alice", 1)
        assert line.admit(waiting, capacity=1) == []
        assert line.admit(waiting, capacity=1) == []
        assert line.depth().waiting == 1

    def test_release_frees_a_slot_once_and_withdraws_a_waiting_job(self, line: FairLine) -> None:
        first, second, third = tickets("alice", 3)
        admit_all(line, [first, second, third], 1)
        assert line.release(first.job_id) is True
        assert line.release(first.job_id) is False
        assert line.release("never-admitted") is False
        assert line.release(third.job_id) is False  # canceled while waiting
        assert line.place(third.job_id) is None
        assert [h.job_id for h in line.take(capacity=1)] == [second.job_id]
        assert line.take(capacity=5) == []

    def test_a_canceled_waiting_job_costs_its_owner_no_turn(self, line: FairLine) -> None:
        admit_all(line, tickets("bob", 1), 1)  # the one slot is busy
        (alice_first,) = tickets("alice", 1)
        line.admit(alice_first, capacity=1)
        line.release(alice_first.job_id)  # canceled before its turn
        (carol,) = tickets("carol", 1)
        (alice_again,) = tickets("alice", 1)
        line.admit(carol, capacity=1)
        line.admit(alice_again, capacity=1)
        assert line.place(alice_again.job_id).position == 1  # type: ignore[union-attr]
        assert line.place(carol.job_id).position == 0  # type: ignore[union-attr]

    def test_hand_over_now_counts_past_the_capacity(self, line: FairLine) -> None:
        (waiting,) = tickets("alice", 1)
        line.hand_over_now("replayed")
        assert line.admit(waiting, capacity=1) == []
        line.hand_over_now(waiting.job_id)
        assert line.place(waiting.job_id) is None
        assert line.depth().handed_over == 2
        assert line.release("replayed") is True

    def test_concurrent_admits_and_takes_never_pass_the_capacity(self, line: FairLine) -> None:
        capacity = 5
        everyone = [tickets(f"owner{i}", 20) for i in range(4)]
        handed: list[str] = []
        lock = threading.Lock()
        peak = [0]

        def submit(own: list[Ticket]) -> None:
            for ticket in own:
                got = [h.job_id for h in line.admit(ticket, capacity=capacity)]
                got += [h.job_id for h in line.take(capacity=capacity)]
                with lock:
                    handed.extend(got)
                    peak[0] = max(peak[0], line.depth().handed_over)

        def end() -> None:
            ended = 0
            while ended < 80:
                with lock:
                    mine = handed[ended : ended + 1]
                if not mine:
                    got = [h.job_id for h in line.take(capacity=capacity)]
                    with lock:
                        handed.extend(got)
                    continue
                line.release(mine[0])
                ended += 1

        threads = [threading.Thread(target=submit, args=(own,)) for own in everyone]
        threads.append(threading.Thread(target=end))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(handed) == sorted(t.job_id for own in everyone for t in own)
        assert peak[0] <= capacity
        assert line.depth().handed_over == 0

    def test_throughput_is_measured_from_endings(self, line: FairLine, clock: ManualClock) -> None:
        assert line.depth().ends_per_s is None
        handed = deque(admit_all(line, tickets("alice", 11), 11))
        assert len(handed) == 11
        while handed:
            clock.now += 0.5
            line.release(handed.popleft())
        rate = line.depth().ends_per_s
        assert rate is not None and abs(rate - 2.0) < 0.01
        clock.now += 5  # a stall lowers it: 10 intervals in 10 s
        rate = line.depth().ends_per_s
        assert rate is not None and abs(rate - 1.0) < 0.01

    def test_throughput_is_that_of_the_latest_busy_stretch(
        self, line: FairLine, clock: ManualClock
    ) -> None:
        """An idle spell between two bursts does not dilute the rate of the latest one."""
        handed = deque(admit_all(line, tickets("alice", 16), 16))
        for _ in range(10):
            clock.now += 0.1
            line.release(handed.popleft())
        clock.now += 30
        for _ in range(6):
            clock.now += 0.1
            line.release(handed.popleft())
        rate = line.depth().ends_per_s
        assert rate is not None and abs(rate - 10.0) < 0.01

    def test_handed_over_before_lists_the_oldest_first(
        self, line: FairLine, clock: ManualClock
    ) -> None:
        first, second = tickets("alice", 2)
        line.admit(first, capacity=5)
        clock.now += 10
        line.admit(second, capacity=5)
        assert line.handed_over_before(clock.now - 5, limit=10) == [first.job_id]
        assert line.handed_over_before(clock.now, limit=10) == [first.job_id, second.job_id]
        assert line.handed_over_before(clock.now, limit=1) == [first.job_id]
        assert line.handed_over_at(first.job_id) == clock.now - 10
        assert line.handed_over_at("unknown") is None

    def test_waiting_since_is_each_owners_oldest_waiting_job(
        self, line: FairLine, clock: ManualClock
    ) -> None:
        start = clock.now
        line.admit(tickets("busy", 1)[0], capacity=1)
        line.admit(tickets("alice", 1)[0], capacity=1)
        clock.now += 4
        line.admit(tickets("alice", 1)[0], capacity=1)
        line.admit(tickets("bob", 1)[0], capacity=1)
        assert line.waiting_since() == {"alice": start, "bob": start + 4}

    def test_restore_rebuilds_the_line_once_and_keeps_what_it_holds(self, line: FairLine) -> None:
        assert line.needs_restore() is True
        (known,) = tickets("carol", 1)
        line.admit(known, capacity=0)
        alice = tickets("alice", 3)
        line.restore([known, *alice], ["running-1", "queued-handed-1"])
        assert line.needs_restore() is False
        depth = line.depth()
        assert (depth.waiting, depth.handed_over) == (4, 2)
        assert line.place(known.job_id).position == 0  # type: ignore[union-attr]
        assert line.take(capacity=3) and line.depth().handed_over == 3
        line.restore([], ["running-1"])
        assert line.depth().handed_over == 3

    def test_costs_and_weights_must_be_positive(self, line: FairLine) -> None:
        with pytest.raises(ValueError, match="weight"):
            line.admit(Ticket("j", "o", 1, 0), capacity=1)
        with pytest.raises(ValueError, match="cost"):
            line.admit(Ticket("j", "o", 0, 1), capacity=1)
        assert line.depth().waiting == 0

    @staticmethod
    def _drain(line: FairLine) -> list[str]:
        """Hand over one job at a time until nothing waits."""
        handed: list[str] = []
        while line.depth().waiting:
            (h,) = line.take(capacity=line.depth().handed_over + 1)
            handed.append(h.job_id)
        return handed
