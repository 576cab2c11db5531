"""The fair dispatcher's own cost per job, free of the end-to-end runs' noise: one admit (the
submit), one release and refill (the ending) and one place (a read while it waits), on the
memory line and, when Redis answers, on the Redis line, with a line already holding `waiting`
jobs of `owners` owners (the cost must not grow with them).

`python -m bench.dispatch` prints JSON; `make bench` includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from dal.errors import StoreUnavailable
from dal.memory import MemoryFairLine
from dal.ports import FairLine, Ticket


def per_job_us(line: FairLine, *, jobs: int, waiting: int, owners: int) -> dict[str, float]:
    """Microseconds per operation, over `jobs` jobs passing through a line whose slots are
    full and which holds `waiting` other jobs."""
    capacity = 4
    for i in range(capacity):
        line.admit(Ticket(f"busy-{i}", "busy"), capacity=capacity)
    for i in range(waiting):
        line.admit(Ticket(f"wait-{i}", f"owner-{i % owners}"), capacity=capacity)
    ids = [uuid.uuid4().hex for _ in range(jobs)]
    started = time.perf_counter()
    for job_id in ids:
        line.admit(Ticket(job_id, "bench"), capacity=capacity)
    admit = time.perf_counter() - started
    started = time.perf_counter()
    for job_id in ids:
        line.place(job_id)
    place = time.perf_counter() - started
    started = time.perf_counter()
    for job_id in ids:
        line.release(job_id)
        line.take(capacity=capacity)
    release = time.perf_counter() - started
    return {
        "admit_us": round(admit / jobs * 1e6, 1),
        "place_us": round(place / jobs * 1e6, 1),
        "release_and_refill_us": round(release / jobs * 1e6, 1),
    }


def measure(*, jobs: int, waiting: int, owners: int, redis_url: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": jobs, "waiting": waiting, "owners": owners}
    for size in (0, waiting):
        result[f"memory_waiting_{size}"] = per_job_us(
            MemoryFairLine(), jobs=jobs, waiting=size, owners=owners
        )
    if redis_url is None:
        return result
    from dal.redis import RedisFairLine
    from dal.redis.client import make_redis_client

    client = make_redis_client(redis_url)
    try:
        for size in (0, waiting):
            prefix = f"bench-{uuid.uuid4().hex[:8]}:"
            try:
                result[f"redis_waiting_{size}"] = per_job_us(
                    RedisFairLine(client, prefix=prefix), jobs=jobs, waiting=size, owners=owners
                )
            finally:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)
    except StoreUnavailable as exc:
        result["redis"] = {"skipped": str(exc)}
    finally:
        client.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--owners", type=int, default=1000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    result = measure(
        jobs=args.jobs,
        waiting=args.waiting,
        owners=args.owners,
        redis_url=None if args.no_redis else args.redis_url,
    )
    print(json.dumps(result))  # noqa: T201 - one line: `make bench` reads it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
