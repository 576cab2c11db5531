"""CPU seconds used by a process, its children, and this process (Linux /proc), so a run can
say where the cores went: serving, the pipeline process, the bench's own clients."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_threads_cpu_s(pid: int) -> float:
    """CPU seconds of the threads `pid` has now, to the nanosecond (the scheduler's run time
    per thread, /proc/PID/task/*/schedstat). `process_cpu_s` counts in clock ticks (10 ms
    here), a tenth of a block of twenty jobs; this does not, but misses threads that have
    ended, so it suits a short span in a process whose busy threads live on."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total_ns / 1e9


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        listed = (task / "children").read_text().split()
        children.extend(int(child) for child in listed)
    return children


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds spent by `pid`, by its children, and by this process between start and
    stop."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._children = children_of(pid)
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        children = 0.0
        for child in self._children:
            try:
                children += process_cpu_s(child)
            except FileNotFoundError:
                continue
        return process_cpu_s(self._pid), children, own_cpu_s()

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        end = self._read()
        spent = [b - a for a, b in zip(self._start, end, strict=True)]
        jobs = max(jobs, 1)
        return {
            "serving": round(spent[0] * 1000 / jobs, 2),
            "pipeline_process": round(spent[1] * 1000 / jobs, 2),
            "clients": round(spent[2] * 1000 / jobs, 2),
        }
