"""Failpoints: named places where a fault test can make a process fail on purpose.

`FAILPOINTS=after_job_recorded=exit` makes the API die (os._exit(137), as a SIGKILL would
leave it) right after it recorded a job and before it published it; `=error` raises
FailpointTriggered there instead, for tests inside one process. Settings refuse FAILPOINTS in
production profiles, and a process without it pays one dict lookup per point.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Literal, cast

from dal.errors import FailpointTriggered

log = logging.getLogger(__name__)

Action = Literal["exit", "error"]

# Every place the code consults, so a typo in FAILPOINTS is refused instead of ignored.
# after_job_recorded: the job is in the store, not yet in line for the GPUs.
# after_hand_over: the line let jobs through; none of them is published yet.
KNOWN_POINTS: frozenset[str] = frozenset({"after_job_recorded", "after_hand_over"})
ACTIONS: frozenset[str] = frozenset({"exit", "error"})
EXIT_STATUS = 137  # what a shell reports for a process killed by SIGKILL


def parse_failpoints(spec: str | None) -> dict[str, Action]:
    """`name=action[,name=action...]` → {name: action}. Raises ValueError naming what is
    wrong."""
    points: dict[str, Action] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, action = (part.strip() for part in item.partition("="))
        if not sep or name not in KNOWN_POINTS or action not in ACTIONS:
            raise ValueError(
                f"FAILPOINTS entry {item!r} is not NAME=ACTION with NAME in "
                f"{sorted(KNOWN_POINTS)} and ACTION in {sorted(ACTIONS)}"
            )
        points[name] = cast(Action, action)
    return points


class Failpoints:
    """The failpoints armed in this process."""

    def __init__(self, points: Mapping[str, Action] | None = None) -> None:
        self._points = dict(points or {})

    @classmethod
    def from_spec(cls, spec: str | None) -> Failpoints:
        return cls(parse_failpoints(spec))

    @property
    def armed(self) -> Mapping[str, Action]:
        return dict(self._points)

    def hit(self, name: str) -> None:
        action = self._points.get(name)
        if action is None:
            return
        if action == "exit":
            log.critical("failpoint %s: exiting with status %d", name, EXIT_STATUS)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(EXIT_STATUS)
        raise FailpointTriggered(name)
