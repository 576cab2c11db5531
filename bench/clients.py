"""Load from API clients: submit, wait for the result (long poll), download; and submit-only."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.stats import ms, percentile


@dataclass
class JobTiming:
    submitted: float
    done: float
    images: int
    status: str

    @property
    def latency(self) -> float:
        return self.done - self.submitted


@dataclass
class ClientRun:
    timings: list[JobTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _one_job(client: httpx.Client, body: dict[str, Any]) -> JobTiming:
    submitted = time.perf_counter()
    # One round trip: the API holds the answer until the job has finished (RFC 7240 wait).
    created = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=30"})
    created.raise_for_status()
    job = created.json()
    while job["status"] not in ("succeeded", "failed", "canceled"):
        job = client.get(f"/v1/jobs/{job['id']}", headers={"Prefer": "wait=30"}).json()
    done = time.perf_counter()
    for image in job["images"]:
        client.get(image["url"]).raise_for_status()
    return JobTiming(submitted, done, len(job["images"]), job["status"])


def run_clients(
    base_url: str,
    api_key: str,
    *,
    clients: int,
    seconds: float,
    warm_up_s: float,
    body: dict[str, Any],
) -> dict[str, Any]:
    """`clients` threads each run jobs back to back; only jobs that start and finish inside
    the measured window (after the warm-up) count."""
    run = ClientRun()
    stop = threading.Event()
    counter = iter(range(10**9))

    def client_loop() -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
            while not stop.is_set():
                try:
                    # Distinct seeds: identical seeded requests would be deduplicated.
                    timing = _one_job(client, {**body, "seed": next(counter)})
                except Exception as exc:
                    with run.lock:
                        run.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.05)
                    continue
                with run.lock:
                    run.timings.append(timing)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    window_start = begin + warm_up_s
    window_end = window_start + seconds
    time.sleep(max(0.0, window_end - time.perf_counter()))
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    inside = [t for t in run.timings if t.submitted >= window_start and t.done <= window_end]
    # Throughput counts every image finished inside the window, whenever its job started.
    finished = [t for t in run.timings if window_start <= t.done <= window_end]
    images = sum(t.images for t in finished if t.status == "succeeded")
    latencies = [t.latency for t in inside]
    return {
        "clients": clients,
        "window_s": seconds,
        "jobs_finished": len(finished),
        "jobs_total": len(run.timings),
        "images_per_s": round(images / seconds, 2),
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p95": ms(percentile(latencies, 95)),
        },
        "latencies_s": latencies,
        "failed_jobs": sum(1 for t in finished if t.status != "succeeded"),
        "errors": run.errors[:5],
        "error_count": len(run.errors),
    }


def submit_rate(
    base_url: str,
    api_key: str,
    *,
    clients: int,
    requests_per_client: int,
    body: dict[str, Any],
) -> dict[str, Any]:
    """How fast the API accepts jobs (the queue absorbs them; nothing waits for results)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    barrier = threading.Barrier(clients)

    def client_loop() -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            barrier.wait()
            for _ in range(requests_per_client):
                started = time.perf_counter()
                try:
                    client.post("/v1/jobs", json={**body, "seed": next(counter)}).raise_for_status()
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99))},
        "error_count": len(errors),
        "errors": errors[:5],
    }
