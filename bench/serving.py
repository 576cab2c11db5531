"""Serving figures of the embedded profile (issue 19): how fast the API accepts jobs, and
whether what a request costs the service depends on how much the store holds.

`submit_32`: POST /v1/jobs with 32 requests in flight (32 keep-alive connections, a closed
loop), rate limits lifted and quotas off: accepted per second, p50/p99 latency, the service's
CPU per request. Then the service is SIGKILLed (nothing is flushed at shutdown) and every job
id it answered 2xx for is read back through the DAL (SqlJobStore.get on the same SQLite file):
`durable` counts those found, `missing` names the first that are not.

`empty_store` and `store_100k`: submit, read (GET /v1/jobs/{id} of a succeeded job) and list
(GET /v1/jobs?limit=20), one request at a time over one connection: the service's CPU per
request (its threads' run time, /proc/PID/task/*/schedstat) and latency, with a store that
holds only the 25 jobs a read and a full page need, against one that holds 100,000 jobs of
1,000 keys' owners (seeded with bulk inserts through SQLAlchemy Core on the migrated schema).
Both services run side by side and each kind of request alternates between them in rounds
(ABBA), so whatever else loads the machine meanwhile weighs on both alike. The bench key's
owner has 1,000 of them; statuses are mostly succeeded, some failed and canceled, a few queued
and running, created over the last 30 days (some since 00:00 UTC). The page and the read find
the same 25 newest jobs in both stores, so only the store's size differs. Quotas are on here,
with limits no run reaches (QUOTA_MAX_IN_FLIGHT, QUOTA_IMAGES_PER_DAY), so every submit counts
the owner's jobs in flight and images since 00:00 UTC over real rows.
`ratio_100k_to_empty` is the CPU per request of the big store over the empty one.

The service runs as a Cloud Run API instance does: JOB_QUEUE=memory (allowed with
APP_ENV=local) records each job and hands it to an in-process queue that nobody consumes, so no
diffusion pipeline shares the cores with the API; DISPATCH_CAPACITY keeps its default (16 jobs
handed over, the rest wait in the fair line in memory, as a burst would on a busy fleet).
OUTBOX_SWEEP_INTERVAL_S=0 turns the periodic sweep (outbox, line repair, recovery) off, so a
pass over the seeded queued jobs is not counted as a request's cost. The load comes from
bench.http_load (raw HTTP/1.1 on asyncio), not httpx, which would cost more CPU than the service
on a 2-core machine.

`python -m bench.serving` prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bench.__main__ import KEY, log, service_env, start_api
from bench.cpu_time import live_threads_cpu_s, process_cpu_s
from bench.http_load import LoadResult, ids_of, json_request, request_bytes, run_load
from bench.stats import ms, percentile
from dal.factory import build_stores, close_all
from dal.records import ENQUEUE_FAILED, ImageRef, JobParams, JobStatus
from dal.settings import Settings
from dal.sql import create_sql_engine, upgrade
from dal.sql.schema import api_keys, jobs
from emulators.process import Service, free_port, kill_pid, stop_service
from emulators.stack import ensure_tiny_model

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
BODY: dict[str, Any] = {
    "prompt": "a lighthouse on a cliff at dawn",
    "width": 64,
    "height": 64,
    "num_inference_steps": 2,
}
# The owner of KEY: the service adds KEY for BOOTSTRAP_API_KEY_OWNER when it starts.
BENCH_OWNER = "bench-owner"
# Newest jobs of the bench owner in both stores: what the page of 20 and the read find.
FIXTURE_JOBS = 25
BENCH_OWNER_JOBS = 1000
# (status, share) of the seeded jobs.
STATUS_MIX = (
    (JobStatus.SUCCEEDED, 0.90),
    (JobStatus.FAILED, 0.05),
    (JobStatus.CANCELED, 0.035),
    (JobStatus.QUEUED, 0.01),
    (JobStatus.RUNNING, 0.005),
)
SEED_BATCH = 10_000


def database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'txt2img.sqlite3').resolve()}"


def serving_env(data_dir: Path, model: Path, port: int, *, quotas: bool) -> dict[str, str]:
    return service_env(
        data_dir,
        model,
        APP_ENV="local",
        PORT=str(port),
        JOB_STORE="sql",
        BLOB_STORE="filesystem",
        DATABASE_URL=database_url(data_dir),
        JOB_QUEUE="memory",
        OUTBOX_SWEEP_INTERVAL_S="0",
        BOOTSTRAP_API_KEY_OWNER=BENCH_OWNER,
        # 0: unlimited, and no store read. Otherwise limits no run reaches, counted anyway.
        QUOTA_MAX_IN_FLIGHT="1000000" if quotas else "0",
        QUOTA_IMAGES_PER_DAY="1000000000" if quotas else "0",
    )


@contextmanager
def serving(
    name: str, data_dir: Path, model: Path, *, quotas: bool, kill: bool = False
) -> Iterator[tuple[Service, int, int]]:
    """The embedded API on a free port: (service, its pid, port). SIGKILLed at the end with
    `kill`, else stopped (SIGTERM)."""
    port = free_port()
    env = serving_env(data_dir, model, port, quotas=quotas)
    service = start_api(name, port, env, data_dir / "logs")
    if service.pid is None:
        raise RuntimeError("the service has no process id")
    try:
        yield service, service.pid, port
    finally:
        if kill:
            kill_pid(service.pid)
        else:
            stop_service(service)


def submit_requests(start: int, count: int) -> list[bytes]:
    """`count` submits, each with a seed of its own (identical seeded requests are deduped)."""
    return [
        json_request("POST", "/v1/jobs", {**BODY, "seed": start + i}, host=HOST, api_key=KEY)
        for i in range(count)
    ]


def errors_of(result: LoadResult, ok: tuple[int, ...]) -> dict[str, Any]:
    wrong = {str(s): n for s, n in sorted(result.statuses.items()) if s not in ok}
    return {
        "errors": sum(wrong.values()) + len(result.errors),
        **({"error_statuses": wrong} if wrong else {}),
        **({"error_samples": result.errors[:3]} if result.errors else {}),
    }


# ---- submits with 32 in flight, and durability ----------------------------------------------


def submit_32(model: Path, work: Path, *, per_connection: int) -> dict[str, Any]:
    connections = 32
    data_dir = work / "submit-32"
    upgrade_only(database_url(data_dir))
    warm = submit_requests(0, connections * 10)
    measured = submit_requests(len(warm), connections * per_connection)
    with serving("serving-submit", data_dir, model, quotas=False, kill=True) as (_, pid, port):
        warmed = run_load(
            HOST, port, warm.__getitem__, total=len(warm), connections=connections, keep_bodies=True
        )
        cpu = process_cpu_s(pid)
        result = run_load(
            HOST,
            port,
            measured.__getitem__,
            total=len(measured),
            connections=connections,
            keep_bodies=True,
        )
        cpu = process_cpu_s(pid) - cpu
    # The service is gone (SIGKILL): what it answered 2xx for must be in the store.
    accepted = ids_of(warmed) + ids_of(result)
    missing = missing_jobs(database_url(data_dir), accepted)
    return {
        "connections": connections,
        "requests": result.requests,
        "requests_per_s": round(result.per_s, 1),
        "latency_ms": {
            "p50": ms(percentile(result.latencies_s, 50)),
            "p99": ms(percentile(result.latencies_s, 99)),
        },
        "cpu_ms": round(cpu * 1000 / max(result.requests, 1), 3),
        "accepted": len(accepted),
        "durable": len(accepted) - len(missing),
        **({"missing": missing[:5]} if missing else {}),
        **errors_of(result, (200, 201, 202)),
        "warm_up_errors": errors_of(warmed, (200, 201, 202))["errors"],
    }


def missing_jobs(url: str, job_ids: list[str]) -> list[str]:
    """Those of `job_ids` the job store does not hold, read through the DAL as a fresh process
    reads it (JOB_STORE=sql on the same DATABASE_URL)."""
    from dal.errors import JobNotFound

    closers: list[Callable[[], None]] = []
    store, _ = build_stores(Settings(app_env="local", job_store="sql", database_url=url), closers)
    missing = []
    try:
        for job_id in job_ids:
            try:
                job = store.get(job_id)
            except JobNotFound:
                missing.append(job_id)
                continue
            if job.owner != BENCH_OWNER:
                missing.append(job_id)
    finally:
        close_all(closers)
    return missing


# ---- cost against the store's size ----------------------------------------------------------


def upgrade_only(url: str) -> None:
    engine = create_sql_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def seed_store(url: str, *, total_jobs: int, keys: int, now: datetime) -> dict[str, Any]:
    """Migrate the database at `url` and fill it: `keys` - 1 API keys (the service adds KEY,
    the last), and `total_jobs` jobs, the newest FIXTURE_JOBS of them the bench owner's,
    succeeded. Returns the fixture's ids and the seeding time."""
    rng = random.Random(19)  # noqa: S311 - reproducible test data  # nosec B311
    started = time.perf_counter()
    engine = create_sql_engine(url)
    try:
        upgrade(engine)
        owners = [f"owner-{i:04d}" for i in range(1, keys)]
        key_rows = [
            {
                "id": f"key_{i:012x}",
                "owner": owner,
                "key_hash": hashlib.sha256(f"seeded-key-{i}".encode()).hexdigest(),
                "label": "seeded",
                "created_at": now - timedelta(days=60),
                "revoked_at": None,
                "max_in_flight": None,
                "images_per_day": None,
                "weight": 1,
            }
            for i, owner in enumerate(owners)
        ]
        background = total_jobs - FIXTURE_JOBS
        bench_share = min(BENCH_OWNER_JOBS, background)
        # A skewed spread over the other owners: a few heavy users, a long tail.
        weights = [rng.paretovariate(1.2) for _ in owners]
        job_owners = [BENCH_OWNER] * bench_share + (
            rng.choices(owners, weights, k=background - bench_share) if owners else []
        )
        statuses = [s for s, _ in STATUS_MIX]
        shares = [w for _, w in STATUS_MIX]
        with engine.begin() as conn:
            if key_rows:
                conn.execute(insert(api_keys), key_rows)
        batch: list[dict[str, Any]] = []
        for owner in job_owners:
            status = rng.choices(statuses, shares)[0]
            if status in (JobStatus.QUEUED, JobStatus.RUNNING):
                created = now - timedelta(seconds=rng.uniform(60, 900))
            else:
                created = now - timedelta(seconds=rng.uniform(60, 30 * 86_400))
            batch.append(job_row(rng, owner, status, created, now))
            if len(batch) >= SEED_BATCH:
                insert_jobs(engine, batch)
                batch = []
        fixture = [
            job_row(
                rng,
                BENCH_OWNER,
                JobStatus.SUCCEEDED,
                now - timedelta(seconds=FIXTURE_JOBS - i),
                now,
            )
            for i in range(FIXTURE_JOBS)
        ]
        insert_jobs(engine, batch + fixture)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
            own = conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.owner == BENCH_OWNER)
            ).scalar_one()
    finally:
        engine.dispose()
    return {
        "fixture_ids": [row["id"] for row in fixture],
        "jobs": int(stored),
        "keys": len(key_rows) + 1,
        "bench_owner_jobs": int(own),
        "seed_s": round(time.perf_counter() - started, 1),
    }


def insert_jobs(engine: Any, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(jobs), rows)


def job_row(
    rng: random.Random, owner: str, status: JobStatus, created: datetime, now: datetime
) -> dict[str, Any]:
    """One row of the jobs table, as SqlJobStore writes it (the records' own JSON shapes)."""
    job_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    params = JobParams(
        prompt=f"a lighthouse on a cliff at dawn, study {rng.randrange(10_000)}",
        width=512,
        height=512,
        num_inference_steps=25,
        guidance_scale=7.5,
        seed=rng.randrange(2**32),
        num_images=rng.choices((1, 2, 4), (0.8, 0.15, 0.05))[0],
    )
    digest = hashlib.sha256(owner.encode()).hexdigest()[:16]
    started = created + timedelta(seconds=rng.uniform(0.5, 30))
    finished = started + timedelta(seconds=rng.uniform(2, 20))
    error = None
    images: list[dict[str, Any]] = []
    if status == JobStatus.SUCCEEDED:
        images = [
            ImageRef(f"images/{digest}/{job_id}/{i}.png", 512, 512, seed).to_dict()
            for i, seed in enumerate(params.image_seeds())
        ]
    elif status == JobStatus.FAILED:
        code = ENQUEUE_FAILED if rng.random() < 0.1 else "generation_failed"
        error = {"code": code, "message": "seeded failure"}
    terminal = status.is_terminal
    running = status == JobStatus.RUNNING
    webhook = rng.random() < 0.05
    return {
        "id": job_id,
        "owner": owner,
        "model": "tiny-sd",
        "status": status.value,
        "progress": 1.0 if status == JobStatus.SUCCEEDED else 0.5 if running else 0.0,
        "attempts": 0 if status in (JobStatus.QUEUED, JobStatus.CANCELED) else 1,
        "params": params.to_dict(),
        "error": error,
        "images": images,
        "idempotency_key": f"idem-{job_id[:12]}" if rng.random() < 0.3 else None,
        "request_fingerprint": hashlib.sha256(job_id.encode()).hexdigest(),
        "created_at": created,
        "updated_at": finished if terminal else min(started, now) if running else created,
        "started_at": min(started, now) if terminal or running else None,
        "finished_at": finished if terminal else None,
        "lease_expires_at": now + timedelta(seconds=30) if running else None,
        "enqueued_at": created,
        "handovers": 0,
        "webhook_url": "https://hooks.example.com/txt2img" if webhook else None,
        "webhook_deliveries": (
            [
                {
                    "attempt": 1,
                    "event": f"job.{status.value}",
                    "attempted_at": finished.isoformat(),
                    "status_code": 204,
                    "error": None,
                }
            ]
            if webhook and terminal
            else []
        ),
    }


@dataclass
class Tally:
    """What the rounds of one kind of request on one store added up to."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def add(self, cpu_s: float, result: LoadResult) -> None:
        self.cpu_s += cpu_s
        self.wall_s += result.elapsed_s
        self.latencies_s += result.latencies_s
        self.statuses.update(result.statuses)
        self.errors += result.errors

    def figures(self, ok: tuple[int, ...]) -> dict[str, Any]:
        requests = len(self.latencies_s)
        wrong = {str(s): n for s, n in sorted(self.statuses.items()) if s not in ok}
        return {
            "cpu_ms": round(self.cpu_s * 1000 / max(requests, 1), 3),
            "p50_ms": ms(percentile(self.latencies_s, 50)),
            "p99_ms": ms(percentile(self.latencies_s, 99)),
            "per_s": round(requests / self.wall_s, 1) if self.wall_s else 0.0,
            "requests": requests,
            "errors": sum(wrong.values()) + len(self.errors),
            **({"error_statuses": wrong} if wrong else {}),
            **({"error_samples": self.errors[:3]} if self.errors else {}),
        }


@dataclass(frozen=True)
class Store:
    name: str
    pid: int
    port: int
    fixture_ids: list[str]


def chunk(made: list[bytes], index: int, size: int) -> list[bytes]:
    """Requests [index, index + size) of `made`; one request alone is repeated."""
    if len(made) == 1:
        return made * size
    return made[index : index + size]


def one_round(store: Store, requests: list[bytes], tally: Tally) -> None:
    """`requests`, one at a time over one connection, counted into `tally`. CPU to the
    nanosecond: a round of 125 submits is about nine of /proc's 10 ms clock ticks."""
    cpu = live_threads_cpu_s(store.pid)
    result = run_load(HOST, store.port, requests.__getitem__, total=len(requests))
    tally.add(live_threads_cpu_s(store.pid) - cpu, result)


def compare_stores(
    stores: list[Store], *, reads: int, lists: int, submits: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Each kind of request on every store, in `rounds` rounds whose order alternates (ABBA),
    after a warm-up: whatever else the machine does drifts over both stores alike. Reads and
    the page first: they find the same fixture jobs in every store; submits add jobs."""
    kinds: list[tuple[str, int, tuple[int, ...]]] = [
        ("read", reads, (200,)),
        ("list_page_20", lists, (200,)),
        ("submit", submits, (200, 201, 202)),
    ]
    figures: dict[str, dict[str, Any]] = {store.name: {} for store in stores}
    for kind, total, ok in kinds:
        per_round = max(total // rounds, 1)
        warm_up = max(total // 10, 1)
        requests: dict[str, list[bytes]] = {}
        for n, store in enumerate(stores):
            if kind == "read":
                read = f"/v1/jobs/{store.fixture_ids[-1]}"
                requests[store.name] = [request_bytes("GET", read, host=HOST, api_key=KEY)]
            elif kind == "list_page_20":
                page = "/v1/jobs?limit=20"
                requests[store.name] = [request_bytes("GET", page, host=HOST, api_key=KEY)]
            else:
                count = warm_up + per_round * rounds
                requests[store.name] = submit_requests((n + 1) * 10**7, count)

        tallies = {store.name: Tally() for store in stores}
        for store in stores:
            run_load(
                HOST, store.port, chunk(requests[store.name], 0, warm_up).__getitem__, total=warm_up
            )
        for r in range(rounds):
            order = stores if r % 4 in (0, 3) else stores[::-1]
            for store in order:
                one_round(
                    store,
                    chunk(requests[store.name], warm_up + r * per_round, per_round),
                    tallies[store.name],
                )
        for store in stores:
            figures[store.name][kind] = tallies[store.name].figures(ok)
    return figures


def measure(model: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    log(f"serving: submits, 32 in flight x {args.per_connection} each")
    report: dict[str, Any] = {
        "submit_32": submit_32(model, work, per_connection=args.per_connection)
    }
    log(f"serving: submit 32 done after {time.perf_counter() - started:.0f} s")
    now = datetime.now(UTC)
    seeded: dict[str, dict[str, Any]] = {}
    for name, total, keys in (
        ("empty_store", FIXTURE_JOBS, 1),
        ("store_100k", args.jobs, args.keys),
    ):
        seeded[name] = seed_store(database_url(work / name), total_jobs=total, keys=keys, now=now)
        log(f"serving: {name}: {seeded[name]['jobs']} jobs seeded in {seeded[name]['seed_s']} s")
    with ExitStack() as running:
        stores = []
        for name, seed in seeded.items():
            _, pid, port = running.enter_context(
                serving(f"serving-{name}", work / name, model, quotas=True)
            )
            stores.append(Store(name, pid, port, seed.pop("fixture_ids")))
        figures = compare_stores(
            stores, reads=args.reads, lists=args.lists, submits=args.submits, rounds=args.rounds
        )
    log(f"serving: stores compared after {time.perf_counter() - started:.0f} s")
    report["empty_store"] = figures["empty_store"]
    report["store_100k"] = {**figures["store_100k"], **seeded["store_100k"]}
    empty, big = figures["empty_store"], figures["store_100k"]
    kinds = ("submit", "read", "list_page_20")
    report["ratio_100k_to_empty"] = {
        kind: round(big[kind]["cpu_ms"] / max(empty[kind]["cpu_ms"], 1e-9), 2) for kind in kinds
    }
    report["ratio_100k_to_empty_p50"] = {
        kind: round(big[kind]["p50_ms"] / max(empty[kind]["p50_ms"], 1e-9), 2) for kind in kinds
    }
    report["duration_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--model", type=Path, help="a diffusers folder (default: the tiny model)")
    parser.add_argument("--per-connection", type=int, default=150, help="submits per connection")
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--lists", type=int, default=1000)
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the big store")
    parser.add_argument("--keys", type=int, default=1000, help="API keys in the big store")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds per kind")
    args = parser.parse_args()
    model = args.model or ensure_tiny_model(REPO / ".data" / "bench" / "tiny-sd")
    work = Path(tempfile.mkdtemp(prefix="txt2img-serving-"))
    report = measure(model, work, args)
    # The stores (about 100 MB) go; after a failure they stay, with the services' logs.
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))  # noqa: T201 - one line for make bench
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
