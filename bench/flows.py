"""What the serving layer adds to one job, for each way a client can ask for it (issue 19), on
the embedded profile exactly as a user runs it (every setting at its default, PIPELINE_CPUS
included), with one client:

- `one_round_trip`: `POST /v1/jobs` with `Prefer: wait=30` answers the finished job, then the
  image is downloaded through its signed URL;
- `three_calls`: `POST /v1/jobs` answers 202 at once, `GET /v1/jobs/{id}` with `Prefer: wait=30`
  answers the finished job, then the download.

For each: the client's latency up to the finished job (p50, p95), the `added` latency (that
latency less the pipeline's own time for the job: the mean of `txt2img_pipeline_seconds` over
the same round, read from the service's /metrics), and the serving process's CPU per job
(submit, wait and download; user + system of the API process from /proc; the pipeline's child
process is not counted). The flows alternate in rounds, so whatever else loads the machine
weighs on both alike. `python -m bench.flows` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import KEY, service_env, start_api
from bench.cpu_time import process_cpu_s
from bench.stats import ms, percentile
from emulators.process import free_port, stop_service
from emulators.stack import ensure_tiny_model

REPO = Path(__file__).resolve().parents[1]
BODY = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 2}
FLOWS = ("one_round_trip", "three_calls")
_PIPELINE = re.compile(r"^txt2img_pipeline_seconds_(sum|count) ([0-9.e+-]+)$", re.MULTILINE)


def pipeline_totals(client: httpx.Client) -> tuple[float, float]:
    """(seconds, calls) the service's pipeline has spent so far."""
    found = dict(_PIPELINE.findall(client.get("/metrics").text))
    return float(found.get("sum", 0.0)), float(found.get("count", 0.0))


def one_job(client: httpx.Client, flow: str, seed: int) -> float:
    """One job through `flow`; the seconds until the client holds the finished job."""
    body = {**BODY, "seed": seed}
    started = time.perf_counter()
    if flow == "one_round_trip":
        job = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=30"}).json()
    else:
        created = client.post("/v1/jobs", json=body)
        created.raise_for_status()
        job = client.get(f"/v1/jobs/{created.json()['id']}", headers={"Prefer": "wait=30"}).json()
    finished = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"a {flow} job did not succeed: {job}")
    for image in job["images"]:
        client.get(image["url"]).raise_for_status()
    return finished


def measure(model: Path, work: Path, *, jobs: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    env = service_env(work / "data", model, APP_ENV="local", PORT=str(port))
    service = start_api("flows-api", port, env, work / "logs")
    pid = service.pid
    if pid is None:
        raise RuntimeError("the service has no process id")
    latencies: dict[str, list[float]] = {flow: [] for flow in FLOWS}
    added: dict[str, list[float]] = {flow: [] for flow in FLOWS}
    cpu: dict[str, float] = dict.fromkeys(FLOWS, 0.0)
    seed = 0
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            for flow in FLOWS:  # warm-up
                for _ in range(10):
                    seed += 1
                    one_job(client, flow, seed)
            per_round = max(jobs // rounds, 1)
            for r in range(rounds):
                order = FLOWS if r % 2 == 0 else FLOWS[::-1]
                for flow in order:
                    spent, calls = pipeline_totals(client)
                    before = process_cpu_s(pid)
                    round_latencies = []
                    for _ in range(per_round):
                        seed += 1
                        round_latencies.append(one_job(client, flow, seed))
                    cpu[flow] += process_cpu_s(pid) - before
                    spent_after, calls_after = pipeline_totals(client)
                    pipeline_s = (spent_after - spent) / max(calls_after - calls, 1)
                    latencies[flow] += round_latencies
                    added[flow] += [latency - pipeline_s for latency in round_latencies]
    finally:
        stop_service(service)
    # Each round also scraped /metrics twice: a small part of the CPU figure, said here.
    result: dict[str, Any] = {"jobs_per_flow": per_round * rounds, "body": BODY}
    for flow in FLOWS:
        result[flow] = {
            "latency_ms": {
                "p50": ms(percentile(latencies[flow], 50)),
                "p95": ms(percentile(latencies[flow], 95)),
            },
            "added_latency_ms": {
                "p50": ms(percentile(added[flow], 50)),
                "p95": ms(percentile(added[flow], 95)),
            },
            "serving_cpu_ms_per_job": round(cpu[flow] * 1000 / (per_round * rounds), 2),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per flow")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    model = args.model or ensure_tiny_model(REPO / ".data" / "bench" / "tiny-sd")
    work = Path(tempfile.mkdtemp(prefix="txt2img-flows-"))
    print(json.dumps(measure(model, work, jobs=args.jobs, rounds=args.rounds)))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
