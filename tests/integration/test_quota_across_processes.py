"""One in-flight quota across API processes: three `python -m api` on one PostgreSQL database
and one Redis, 60 submissions of one key at once under QUOTA_MAX_IN_FLIGHT=5. Exactly 5 are
accepted and the rest answered 429 quota-in-flight-exceeded, however the submissions
interleave; once the accepted jobs end (canceled through the API), nothing is in flight and
the next race admits 5 again.

JOB_QUEUE=memory: nothing runs the jobs, so they stay queued until canceled, which keeps the
count under the test's control."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dal.sql import SqlJobStore, create_sql_engine, upgrade
from emulators.process import free_port
from tests.concurrent_callers import at_once
from tests.integration import postgres_service, redis_service

postgres_admin_url = postgres_service.postgres_admin_url
empty_postgres_url = postgres_service.empty_postgres_url
redis_url = redis_service.redis_url
redis_prefix = redis_service.redis_prefix

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
SUBMITS = 60
# The old check-then-insert overshot in about half of single races; three make a miss rare.
ROUNDS = 3
LIMIT = 5
KEY = "quota-across-processes-key-0123456789"
OWNER = "quota-owner"
FAST = {"width": 64, "height": 64, "num_inference_steps": 1}


@pytest.fixture
def api_urls(
    empty_postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[list[str]]:
    """The base URLs of three API processes sharing the database and Redis."""
    engine = create_sql_engine(empty_postgres_url)
    upgrade(engine)  # once, before they start, rather than three migrators racing at start
    engine.dispose()
    env = {
        **os.environ,
        "APP_ENV": "local",
        "JOB_STORE": "sql",
        "DATABASE_URL": empty_postgres_url,
        "JOB_QUEUE": "memory",
        "BLOB_STORE": "memory",
        "RATE_LIMITER": "redis",
        "REQUEST_CACHE": "redis",
        "JOB_EVENTS": "redis",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "DATA_DIR": str(tmp_path / "data"),
        "MODEL_ID": "quota-test",
        "DEFAULT_IMAGE_SIZE": "64",
        "BOOTSTRAP_API_KEY": KEY,
        "BOOTSTRAP_API_KEY_OWNER": OWNER,
        "QUOTA_MAX_IN_FLIGHT": str(LIMIT),
        # The rate limit is another limit, with tests of its own: out of the way here.
        "RATE_LIMIT_SUBMIT_BURST": "1000",
        "RATE_LIMIT_SUBMIT_PER_MINUTE": "6000",
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
    }
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    urls: list[str] = []
    try:
        for i in range(PROCESSES):
            port = free_port()
            log_path = tmp_path / f"api-{i}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "api"],
                    env={**env, "PORT": str(port)},
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            processes.append((process, log_path))
            urls.append(f"http://127.0.0.1:{port}")
        for (process, log_path), url in zip(processes, urls, strict=True):
            _wait_healthy(url, process, log_path)
        yield urls
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"API at {url} exited {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"API at {url} did not answer /healthz in 60 s:\n{log_path.read_text()}")


def _submit(url: str, prompt: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/jobs",
        json={"prompt": prompt, **FAST},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_three_processes_admit_exactly_the_in_flight_quota(
    api_urls: list[str], empty_postgres_url: str
) -> None:
    engine = create_sql_engine(empty_postgres_url)
    jobs = SqlJobStore(engine)
    try:
        # Each round starts with nothing in flight, so every round is a fresh race.
        for race in range(ROUNDS):
            accepted = _race(api_urls, race)
            assert jobs.count_in_flight(OWNER) == LIMIT
            # The accepted jobs end (canceled, through whichever process): the slots free up.
            for i, answer in enumerate(accepted):
                canceled = httpx.delete(
                    f"{api_urls[i % PROCESSES]}/v1/jobs/{answer.json()['id']}",
                    headers={"Authorization": f"Bearer {KEY}"},
                    timeout=30,
                )
                assert canceled.status_code == 200, canceled.text
            assert jobs.count_in_flight(OWNER) == 0
        assert len(jobs.list_by_owner(OWNER, limit=100).items) == ROUNDS * LIMIT
    finally:
        engine.dispose()


def _race(api_urls: list[str], race: int) -> list[httpx.Response]:
    """SUBMITS submissions at once, spread over the processes; the accepted ones."""

    def submit(i: int) -> Callable[[], httpx.Response]:
        return lambda: _submit(api_urls[i % PROCESSES], f"race {race}.{i}")

    answers = at_once([submit(i) for i in range(SUBMITS)])
    assert [a for a in answers if not isinstance(a, httpx.Response)] == []
    accepted = [a for a in answers if a.status_code in (200, 202)]
    refused = [a for a in answers if a.status_code == 429]
    assert (len(accepted), len(refused)) == (LIMIT, SUBMITS - LIMIT), sorted(
        a.status_code for a in answers
    )
    assert {a.json()["code"] for a in refused} == {"quota-in-flight-exceeded"}
    assert {a.json()["limit"] for a in refused} == {LIMIT}
    return accepted
