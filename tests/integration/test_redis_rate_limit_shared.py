"""One limit across processes: two OS processes, each with its own client and RedisRateLimiter
on the same prefix, hammer one key; together they get the burst and no more."""

from __future__ import annotations

import math
import multiprocessing
import time
from multiprocessing.synchronize import Barrier

import pytest

from dal.redis import RedisRateLimiter, make_redis_client
from tests.integration import redis_service

redis_url = redis_service.redis_url
redis_prefix = redis_service.redis_prefix

BURST = 10
LIMIT, PERIOD_S = 1, 3600.0  # refills one token an hour
HITS_PER_PROCESS = 200
PROCESSES = 2


def hammer(url: str, prefix: str, start: Barrier, results: multiprocessing.Queue[int]) -> None:
    """Runs in a child process: once every process is ready, hit as fast as possible."""
    client = make_redis_client(url)
    limiter = RedisRateLimiter(client, limit=LIMIT, period_s=PERIOD_S, burst=BURST, prefix=prefix)
    limiter.hit("warm-up")  # connect and load the script before the race starts
    start.wait(timeout=60)
    allowed = sum(limiter.hit("shared").allowed for _ in range(HITS_PER_PROCESS))
    client.close()
    results.put(allowed)


@pytest.mark.timeout(120)
def test_two_processes_share_one_budget(redis_url: str, redis_prefix: str) -> None:
    prefix = redis_prefix
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results: multiprocessing.Queue[int] = ctx.Queue()
    workers = [
        ctx.Process(target=hammer, args=(redis_url, prefix, start, results))
        for _ in range(PROCESSES)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        counts = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
    elapsed = time.monotonic() - started

    assert all(worker.exitcode == 0 for worker in workers)
    # Everything since the first process started, so an upper bound on the refill.
    refill = math.floor(elapsed * LIMIT / PERIOD_S)
    assert BURST <= sum(counts) <= BURST + refill
