"""Drive the load scenario against a running stack and reconcile what it did.

`run_load` creates API keys with the admin command, runs locust (tests/load/locustfile.py) in
a subprocess for a fixed time, then, from the service's own answers and the worker's
Prometheus counters, checks what locust cannot see: every accepted job reached a final state,
every succeeded job's images download as PNGs, and the pipeline generated exactly the images
the succeeded jobs asked for (none twice). The result is a JSON-ready summary.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
# Settings for the stack under load: the limiter is not what is being measured.
LOAD_ENV = {
    "RATE_LIMIT_SUBMIT_BURST": "10000",
    "RATE_LIMIT_SUBMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_READ_BURST": "10000",
    "RATE_LIMIT_READ_PER_MINUTE": "100000",
}
IMAGES = "txt2img_images_generated_total"
PIPELINE_RUNS = "txt2img_pipeline_runs_total"
PIPELINE_FAILURES = "txt2img_pipeline_failures_total"


@dataclass(frozen=True)
class LoadPlan:
    users: int
    keys: int
    duration_s: int
    spawn_rate: float
    seed: int = 5
    # How long accepted jobs may take to finish once locust has stopped.
    drain_timeout_s: float = 120.0


def create_keys(env: dict[str, str], count: int) -> list[str]:
    """`count` keys for owners load-0..N-1, each made by `txt2img-admin keys create`."""

    def create(i: int) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "api.admin_cli", "keys", "create", "--owner", f"load-{i}"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"keys create failed:\n{done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    with concurrent.futures.ThreadPoolExecutor(min(count, 4)) as pool:
        return list(pool.map(create, range(count)))


def worker_counters(worker_url: str) -> dict[str, float]:
    """The worker's pipeline counters, read from its /metrics."""
    text = httpx.get(f"{worker_url}/metrics", timeout=10).raise_for_status().text
    wanted = {IMAGES, PIPELINE_RUNS, PIPELINE_FAILURES}
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }
    missing = wanted - found.keys()
    if missing:
        raise RuntimeError(f"the worker's /metrics lacks {sorted(missing)}")
    return found


def run_locust(api_url: str, keys: list[str], plan: LoadPlan, workdir: Path) -> dict[str, Any]:
    """Run the scenario for plan.duration_s; returns its request statistics."""
    keys_file = workdir / "keys.json"
    keys_file.write_text(json.dumps(keys))
    keys_file.chmod(0o600)
    journal = workdir / "journal.jsonl"
    journal.write_text("")
    log_path = workdir / "locust.log"
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "--host", api_url,
        "--users", str(plan.users),
        "--spawn-rate", str(plan.spawn_rate),
        "--run-time", f"{plan.duration_s}s",
        "--stop-timeout", "5",
        "--csv", str(workdir / "locust"),
        "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {
        **_plain_env(),
        "LOAD_KEYS_FILE": str(keys_file),
        "LOAD_JOURNAL": str(journal),
        "LOAD_SEED": str(plan.seed),
    }
    with log_path.open("wb") as log:
        done = subprocess.run(
            argv,
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=plan.duration_s + 120,
            check=False,
        )
    stats_path = workdir / "locust_stats.csv"
    if not stats_path.exists():
        raise RuntimeError(f"locust wrote no statistics:\n{log_path.read_text()[-3000:]}")
    return {"exit_code": done.returncode, "rows": _read_stats(stats_path)}


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOAD_")}


def _read_stats(path: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "p50_ms": float(row["50%"] or 0),
                "p95_ms": float(row["95%"] or 0),
            }
    return rows


def read_journal(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def owned_jobs(api_url: str, keys: list[str]) -> dict[str, str]:
    """Every job the service holds for the keys' owners (id -> key), page by page: it finds
    jobs whose acceptance never reached locust (a timed-out answer) too."""
    owned: dict[str, str] = {}
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for key in keys:
            cursor: str | None = None
            while True:
                params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                page = client.get("/v1/jobs", params=params, headers=_auth(key))
                page.raise_for_status()
                owned.update((job["id"], key) for job in page.json()["items"])
                cursor = page.json()["next_cursor"]
                if not cursor:
                    break
    return owned


def settle(
    api_url: str, pending: dict[str, str], timeout_s: float
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Poll each job (id -> key) until it is final; returns (final jobs by id, lost ids)."""
    final: dict[str, dict[str, Any]] = {}
    lost: list[str] = []
    pending = dict(pending)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api_url, timeout=30) as client:
        while pending:
            for job_id, key in list(pending.items()):
                answer = client.get(f"/v1/jobs/{job_id}", headers=_auth(key))
                if answer.status_code == 404:
                    lost.append(job_id)
                    del pending[job_id]
                elif answer.status_code == 200 and answer.json()["status"] in TERMINAL:
                    final[job_id] = answer.json()
                    del pending[job_id]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return final, lost + sorted(pending)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def download_all(final: dict[str, dict[str, Any]]) -> tuple[int, list[str]]:
    """GET every image of every succeeded job; returns (PNGs downloaded, problems)."""
    problems: list[str] = []
    downloaded = 0
    with httpx.Client(timeout=30) as client:
        for job in final.values():
            if job["status"] != "succeeded":
                continue
            if len(job["images"]) != job["params"]["num_images"]:
                problems.append(f"job {job['id']} has {len(job['images'])} images")
            for image in job["images"]:
                answer = client.get(image["url"])
                if answer.status_code == 200 and answer.content.startswith(PNG_MAGIC):
                    downloaded += 1
                else:
                    problems.append(f"image of {job['id']}: {answer.status_code}")
    return downloaded, problems


def settled_counters(
    worker_url: str, quiet_s: float = 1.0, timeout_s: float = 30
) -> dict[str, float]:
    """The worker's counters once they stop moving (a late duplicate would still add)."""
    deadline = time.monotonic() + timeout_s
    last = worker_counters(worker_url)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = worker_counters(worker_url)
        if now == last:
            return now
        last = now
    return last


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": round(values[0], 1) if values else 0.0, "p95": 0.0}
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return {"p50": round(statistics.median(values), 1), "p95": round(cuts[18], 1)}


def _seconds(job: dict[str, Any]) -> float:
    created = datetime.fromisoformat(job["created_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - created).total_seconds() * 1000


def run_load(
    *, env: dict[str, str], api_url: str, worker_url: str, plan: LoadPlan, workdir: Path
) -> dict[str, Any]:
    """Run the scenario against the stack whose processes use `env`; the summary says
    whether everything reconciled (`reconciled`) and, if not, why (`problems`)."""
    workdir = workdir.resolve()  # locust runs inside it and reads the paths given
    workdir.mkdir(parents=True, exist_ok=True)
    keys = create_keys(env, plan.keys)
    before = worker_counters(worker_url)
    started = time.monotonic()
    locust = run_locust(api_url, keys, plan, workdir)
    journal = read_journal(workdir / "journal.jsonl")
    journaled = {entry["id"]: keys[entry["key"]] for entry in journal}
    accepted = {**owned_jobs(api_url, keys), **journaled}
    final, lost = settle(api_url, accepted, plan.drain_timeout_s)
    downloaded, problems = download_all(final)
    after = settled_counters(worker_url)
    elapsed = time.monotonic() - started

    by_status = {s: sum(1 for j in final.values() if j["status"] == s) for s in sorted(TERMINAL)}
    duplicate_ids = len(journal) - len(journaled)
    expected_images = sum(
        j["params"]["num_images"] for j in final.values() if j["status"] == "succeeded"
    )
    generated = int(after[IMAGES] - before[IMAGES])
    aggregated = locust["rows"].get("Aggregated", {"requests": 0, "failures": 0})
    if lost:
        problems.append(f"{len(lost)} accepted jobs lost or never final: {lost[:5]}")
    if duplicate_ids:
        problems.append(f"{duplicate_ids} job ids accepted twice")
    if len(accepted) != sum(by_status.values()):
        problems.append(f"accepted {len(accepted)} != final {by_status}")
    if generated != expected_images:
        problems.append(
            f"pipeline generated {generated} images; succeeded jobs hold {expected_images}"
        )
    summary = {
        "users": plan.users,
        "keys": plan.keys,
        "duration_s": plan.duration_s,
        "elapsed_s": round(elapsed, 1),
        "requests": aggregated["requests"],
        "failures": aggregated["failures"],
        "locust_exit_code": locust["exit_code"],
        "latency_ms": {
            name: {"p50": row["p50_ms"], "p95": row["p95_ms"], "requests": row["requests"]}
            for name, row in locust["rows"].items()
        },
        "jobs": {
            "accepted": len(accepted),
            "accepted_unseen_by_client": len(accepted.keys() - journaled.keys()),
            **by_status,
            "lost": len(lost),
            "attempts_over_1": sum(1 for j in final.values() if j["attempts"] > 1),
        },
        "job_latency_ms": _percentiles(
            [_seconds(j) for j in final.values() if j["status"] == "succeeded"]
        ),
        "images": {
            "expected": expected_images,
            "generated": generated,
            "downloaded": downloaded,
            "duplicated": max(0, generated - expected_images),
            "pipeline_runs": int(after[PIPELINE_RUNS] - before[PIPELINE_RUNS]),
            "pipeline_failures": int(after[PIPELINE_FAILURES] - before[PIPELINE_FAILURES]),
        },
        "problems": problems,
        "reconciled": not problems,
    }
    return summary
