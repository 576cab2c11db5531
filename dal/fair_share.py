"""The fair order in which waiting jobs are handed to the GPUs: weighted fair share between
owners, first in first out within one owner. The dispatcher (dal.dispatcher) decides *when* a
job is handed over; these rules decide *which* one is next.

Start-time fair queueing (Goyal, Vin and Cheng, SIGCOMM 1996). A job is tagged when it joins
the line: its start tag is the later of its owner's previous finish tag and the virtual time,
its finish tag one cost/weight later. Jobs are handed over by increasing start tag, and the
virtual time moves to the start tag of each job handed over. So

* an owner with weight 2 gets twice the hand-overs (or images: cost is a job's images) of an
  owner with weight 1 while both wait, whatever either submitted before;
* an owner that was idle starts at the current virtual time: it banks no credit while away and
  cannot flood the GPUs on return, and a newcomer is served within one turn of everyone waiting,
  not behind their whole backlog;
* one owner's jobs keep their order (its tags only grow).

Pure and deterministic. `dal.memory.fair_line` applies them in Python, `dal.redis.fair_line`
in a Lua script with the same arithmetic; the FairLine contract tests hold both to the same
hand-over order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Tag:
    start: float
    finish: float


@dataclass(slots=True)
class FairShareState:
    """What fair share remembers: the virtual time (the start tag of the latest job handed
    over) and each owner's latest finish tag."""

    virtual_time: float = 0.0
    finish: dict[str, float] = field(default_factory=dict)


def check_share(cost: float, weight: float) -> None:
    if cost <= 0:
        raise ValueError(f"a job's cost must be positive, not {cost}")
    if weight <= 0:
        raise ValueError(f"a weight must be positive, not {weight}")


def tag_arrival(state: FairShareState, owner: str, *, cost: float, weight: float) -> Tag:
    """Tag a job joining the line; the owner's finish tag moves past it."""
    check_share(cost, weight)
    start = max(state.finish.get(owner, 0.0), state.virtual_time)
    tag = Tag(start, start + cost / weight)
    state.finish[owner] = tag.finish
    return tag


def advance(state: FairShareState, tag: Tag) -> None:
    """A job with this tag was handed over."""
    state.virtual_time = max(state.virtual_time, tag.start)


def withdraw(state: FairShareState, owner: str, tag: Tag) -> None:
    """A waiting job left the line without being handed over (canceled). When it was its
    owner's latest, the owner's finish tag goes back to its start: a cancel costs no turn."""
    if state.finish.get(owner) == tag.finish:
        state.finish[owner] = tag.start


# How many recent endings of handed-over jobs the line keeps to measure throughput, and how
# far back they count.
RECENT_ENDS = 64
RECENT_ENDS_WINDOW_S = 600.0


def ends_per_second(ends: Sequence[float], now: float) -> float | None:
    """The rate at which handed-over jobs end lately (each ending frees a slot for the next
    waiting job), from their end times (epoch seconds, any order). None when fewer than two
    ended in the window.

    Only the latest busy stretch counts: going back from the newest ending, it stops at a gap
    ten times the window's mean gap (and over a second), an idle spell between two bursts that
    would otherwise dilute the rate. Measured up to `now`, not to the newest ending, so a stall
    (every GPU busy on a long job, or scaling from zero) lowers it instead of freezing it."""
    recent = sorted((t for t in ends if now - t <= RECENT_ENDS_WINDOW_S), reverse=True)
    if len(recent) < 2:
        return None
    idle = max(10 * (recent[0] - recent[-1]) / (len(recent) - 1), 1.0)
    stretch = 1
    while stretch < len(recent) and recent[stretch - 1] - recent[stretch] <= idle:
        stretch += 1
    if stretch < 2:
        return None
    return (stretch - 1) / max(now - recent[stretch - 1], 1e-3)
