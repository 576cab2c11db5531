"""The fair order in which waiting jobs are handed to the GPUs: weighted fair share between
owners, first in first out within one owner (issue 18's dispatcher decides *when* to hand over;
this decides *which* job is next).

Start-time fair queueing (Goyal, Vin and Cheng, SIGCOMM 1996): every waiting job gets a start
tag, the later of the owner's previous finish tag and the current virtual time, and a finish tag
one cost/weight later; jobs are handed over by increasing start tag. So

* an owner with weight 2 gets twice the hand-overs (or images, with cost = images) of an owner
  with weight 1 while both wait, whatever either submitted before;
* an owner that was idle starts at the current virtual time: it banks no credit while away
  and cannot flood the GPUs on return, and a newcomer is served within one turn of everyone
  waiting, not behind their whole backlog;
* one owner's jobs keep their order.

Pure and deterministic: the caller keeps `FairShareState` (in the job store or Redis, so every
API instance computes the same order) and passes the waiting jobs in their arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WaitingJob:
    job_id: str
    owner: str
    cost: float = 1.0  # what fairness counts: 1 per job, or the job's images


@dataclass(frozen=True, slots=True)
class Tagged:
    job: WaitingJob
    start: float
    finish: float


@dataclass(slots=True)
class FairShareState:
    """What fair share remembers between hand-overs: the virtual time (the start tag of the
    last job handed over) and each owner's last finish tag."""

    virtual_time: float = 0.0
    finish: dict[str, float] = field(default_factory=dict)


Weights = Callable[[str], float] | Mapping[str, float]


class FairShare:
    def __init__(self, weights: Weights | None = None, *, default_weight: float = 1.0) -> None:
        if default_weight <= 0:
            raise ValueError("weights must be positive")
        self._weights = weights
        self._default = default_weight

    def weight(self, owner: str) -> float:
        if self._weights is None:
            weight = self._default
        elif isinstance(self._weights, Mapping):
            weight = self._weights.get(owner, self._default)
        else:
            weight = self._weights(owner)
        if weight <= 0:
            raise ValueError(f"owner {owner!r} has weight {weight}; weights must be positive")
        return weight

    def order(self, waiting: Sequence[WaitingJob], state: FairShareState) -> list[Tagged]:
        """Every waiting job, tagged, in the order they would be handed over if nothing else
        arrived. `waiting` is in arrival order (each owner's jobs first in, first out)."""
        previous: dict[str, float] = {}
        tagged: list[tuple[float, int, Tagged]] = []
        for arrival, job in enumerate(waiting):
            if job.cost <= 0:
                raise ValueError(f"job {job.job_id} has cost {job.cost}; costs must be positive")
            start = previous.get(job.owner)
            if start is None:
                start = max(state.finish.get(job.owner, 0.0), state.virtual_time)
            finish = start + job.cost / self.weight(job.owner)
            previous[job.owner] = finish
            tagged.append((start, arrival, Tagged(job, start, finish)))
        tagged.sort(key=lambda item: (item[0], item[1]))
        return [item[2] for item in tagged]

    def positions(self, waiting: Sequence[WaitingJob], state: FairShareState) -> dict[str, int]:
        """How many jobs will be handed over before each waiting job (0: it is next)."""
        return {t.job.job_id: index for index, t in enumerate(self.order(waiting, state))}

    def hand_over(
        self, waiting: Sequence[WaitingJob], state: FairShareState, slots: int
    ) -> list[WaitingJob]:
        """The next `slots` jobs in fair order; `state` moves past them."""
        chosen = self.order(waiting, state)[: max(0, slots)]
        for tagged in chosen:
            state.finish[tagged.job.owner] = tagged.finish
            state.virtual_time = max(state.virtual_time, tagged.start)
        return [tagged.job for tagged in chosen]
