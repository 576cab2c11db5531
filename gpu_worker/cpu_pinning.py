"""Keeping a CPU pipeline and request handling on separate cores (PIPELINE_CPUS).

On a CPU the pipeline's threads and the server's threads otherwise share every core: each
request handled on a core the pipeline uses stalls the pipeline's other threads at their next
barrier. Pinning the pipeline process to some cores and this process's threads to the rest
keeps them apart. Linux only (sched_setaffinity); elsewhere the setting is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuSplit:
    pipeline: tuple[int, ...]
    serving: tuple[int, ...]


def parse_cpu_list(text: str) -> set[int]:
    """'0-2,5' → {0, 1, 2, 5} (the notation of taskset and /sys)."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        start, end = int(first), int(last or first)
        if start > end:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(start, end + 1))
    if not cpus:
        raise ValueError("empty CPU list")
    return cpus


def split_cpus(spec: str, allowed: set[int]) -> CpuSplit | None:
    """The pipeline's CPUs and the rest, from PIPELINE_CPUS: `auto` gives the pipeline every
    allowed CPU but the last (None with fewer than two); a list names them."""
    ordered = sorted(allowed)
    if spec == "auto":
        if len(ordered) < 2:
            return None
        return CpuSplit(pipeline=tuple(ordered[:-1]), serving=tuple(ordered[-1:]))
    pipeline = parse_cpu_list(spec)
    if not pipeline <= allowed:
        raise ValueError(f"PIPELINE_CPUS={spec} names CPUs this process may not use {ordered}")
    serving = tuple(cpu for cpu in ordered if cpu not in pipeline)
    return CpuSplit(pipeline=tuple(sorted(pipeline)), serving=serving)


def allowed_cpus() -> set[int]:
    return set(os.sched_getaffinity(0))


def pin_this_process(cpus: tuple[int, ...]) -> None:
    """Move every thread of this process onto `cpus`; threads started later inherit it
    (on Linux affinity is per thread, so setting it for the process's id alone would move
    only the main thread)."""
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
