"""The serving process's CPU per request, as a client of the embedded profile gets it (issue
19): the per-request floor (`GET /healthz` through every middleware), a read of a finished job
(`GET /v1/jobs/{id}`), a page of the job list, and a submit (`POST /v1/jobs`, whose job the
service then runs: its CPU is counted in `make bench`'s end-to-end figures, not here).

Each is asked `--requests` times over one keep-alive connection, after a warm-up; the figure is
the service process's CPU time (user + system, all threads, /proc) over the requests, so it
holds whatever the client's speed. `python -m bench.request_cost` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import KEY, service_env, start_api
from bench.cpu_time import process_cpu_s
from emulators.process import free_port, stop_service
from emulators.stack import ensure_tiny_model

REPO = Path(__file__).resolve().parents[1]
BODY = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 1}


def cost(pid: int, call: Callable[[], object], requests: int) -> dict[str, float]:
    for _ in range(min(50, requests)):
        call()
    cpu = process_cpu_s(pid)
    started = time.perf_counter()
    for _ in range(requests):
        call()
    wall = time.perf_counter() - started
    return {
        "cpu_ms": round((process_cpu_s(pid) - cpu) * 1000 / requests, 3),
        "per_s": round(requests / wall, 1),
    }


def measure(model: Path, work: Path, requests: int) -> dict[str, Any]:
    port = free_port()
    env = service_env(work / "data", model, APP_ENV="local", PORT=str(port))
    service = start_api("request-cost-api", port, env, work / "logs")
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            job = client.post("/v1/jobs", json=BODY, headers={"Prefer": "wait=30"}).json()
            if job["status"] != "succeeded":
                raise RuntimeError(f"the first job did not succeed: {job}")
            for _ in range(20):  # a list page of 20 jobs
                client.post("/v1/jobs", json=BODY, headers={"Prefer": "wait=30"})
            pid = service.pid
            if pid is None:
                raise RuntimeError("the service has no process id")
            result = {
                "healthz": cost(pid, lambda: client.get("/healthz"), requests),
                "read_finished_job": cost(
                    pid, lambda: client.get(f"/v1/jobs/{job['id']}"), requests
                ),
                "list_page_20": cost(pid, lambda: client.get("/v1/jobs?limit=20"), requests // 4),
            }
    finally:
        stop_service(service)
    return {"requests": requests, **result}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cost", description=__doc__)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    model = args.model or ensure_tiny_model(REPO / ".data" / "bench" / "tiny-sd")
    work = Path(tempfile.mkdtemp(prefix="txt2img-request-cost-"))
    print(json.dumps(measure(model, work, args.requests)))  # noqa: T201 - one line for make bench
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
