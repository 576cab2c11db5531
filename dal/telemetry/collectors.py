"""Series computed when Prometheus scrapes: jobs waiting or running (read from the job store,
capped and cached so a scrape stays cheap) and CUDA memory (only where torch already runs)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dal.errors import StoreUnavailable
from dal.ports import JobStore
from dal.records import JobStatus

log = logging.getLogger(__name__)

# Read at most this many jobs per status: a scrape costs at most 2 x CAP document reads, and a
# value equal to CAP means "at least CAP". The counters give exact totals of finished jobs.
JOBS_BY_STATUS_CAP = 200
JOBS_BY_STATUS_TTL_S = 30.0
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobsByStatusCollector(Collector):
    """`txt2img_jobs{status="queued"|"running"}` across every instance (it reads the shared
    job store). Finished statuses grow without bound: see txt2img_jobs_finished_total."""

    def __init__(
        self,
        *,
        cap: int = JOBS_BY_STATUS_CAP,
        ttl_s: float = JOBS_BY_STATUS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cap = cap
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._store: JobStore | None = None
        self._cached: dict[str, int] = {}
        self._read_at = float("-inf")

    def track(self, store: JobStore | None) -> None:
        """Count in `store` from now on (None: stop counting)."""
        with self._lock:
            self._store = store
            self._cached = {}
            self._read_at = float("-inf")

    def untrack(self, store: JobStore) -> None:
        with self._lock:
            if self._store is store:
                self._store, self._cached = None, {}

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("txt2img_jobs", "", labels=["status"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "txt2img_jobs",
            f"Jobs queued or running now (read from the job store at most every "
            f"{self._ttl_s:g} s; capped at {self._cap}).",
            labels=["status"],
        )
        for status, count in self._counts().items():
            family.add_metric([status], count)
        yield family

    def _counts(self) -> dict[str, int]:
        with self._lock:
            if self._store is None or self._clock() - self._read_at < self._ttl_s:
                return dict(self._cached)
            try:
                self._cached = {
                    status.value: len(self._store.list_by_status(status, limit=self._cap))
                    for status in _ACTIVE
                }
            except StoreUnavailable as exc:
                log.warning("jobs-by-status gauge: job store unavailable: %s", exc)
                self._cached = {}
            self._read_at = self._clock()
            return dict(self._cached)


_GPU_SERIES = (
    "txt2img_gpu_memory_allocated_bytes",
    "txt2img_gpu_memory_peak_bytes",
    "txt2img_gpu_memory_reserved_bytes",
)


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    device: str
    allocated: int
    peak: int
    reserved: int


def _loaded_cuda() -> Any:
    """torch.cuda if this process has already imported torch and initialised CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def cuda_memory(cuda: Any) -> list[DeviceMemory]:
    """One snapshot per CUDA device from a `torch.cuda`-like module (none when it is None)."""
    if cuda is None:
        return []
    return [
        DeviceMemory(
            device=f"cuda:{index}",
            allocated=int(cuda.memory_allocated(index)),
            peak=int(cuda.max_memory_allocated(index)),
            reserved=int(cuda.memory_reserved(index)),
        )
        for index in range(cuda.device_count())
    ]


class GpuMemoryCollector(Collector):
    """`txt2img_gpu_memory_allocated_bytes`, `..._peak_bytes` and `..._reserved_bytes` per
    CUDA device: this process's own (never importing torch itself), or, when the pipeline runs
    in a process of its own, the snapshot that process last reported (`report_from`)."""

    def __init__(self, cuda: Callable[[], Any] = _loaded_cuda) -> None:
        self._cuda = cuda
        self._reported: Callable[[], Sequence[DeviceMemory]] | None = None

    def report_from(self, snapshot: Callable[[], Sequence[DeviceMemory]] | None) -> None:
        self._reported = snapshot

    def describe(self) -> Iterator[Metric]:
        for name in _GPU_SERIES:
            yield GaugeMetricFamily(name, "", labels=["device"])

    def collect(self) -> Iterator[Metric]:
        devices = cuda_memory(self._cuda())
        if not devices and self._reported is not None:
            devices = list(self._reported())
        if not devices:
            return
        allocated = GaugeMetricFamily(
            "txt2img_gpu_memory_allocated_bytes",
            "CUDA memory held by tensors now.",
            labels=["device"],
        )
        peak = GaugeMetricFamily(
            "txt2img_gpu_memory_peak_bytes",
            "Most CUDA memory held by tensors since the process started.",
            labels=["device"],
        )
        reserved = GaugeMetricFamily(
            "txt2img_gpu_memory_reserved_bytes",
            "CUDA memory reserved by the caching allocator now.",
            labels=["device"],
        )
        for memory in devices:
            allocated.add_metric([memory.device], float(memory.allocated))
            peak.add_metric([memory.device], float(memory.peak))
            reserved.add_metric([memory.device], float(memory.reserved))
        yield allocated
        yield peak
        yield reserved


JOBS_BY_STATUS = JobsByStatusCollector()
GPU_MEMORY = GpuMemoryCollector()
REGISTRY.register(JOBS_BY_STATUS)
REGISTRY.register(GPU_MEMORY)
