"""The self-hosted shape as processes: API → Celery on Redis → the Celery GPU worker (real tiny
diffusers model) → PostgreSQL and files. Duplicate deliveries, a worker killed mid-generation,
and the Postman collection."""

from __future__ import annotations

import concurrent.futures
import io
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from dal.celery import TASK_NAME
from dal.celery.app import key_prefix
from dal.redis.client import make_redis_client
from emulators.postgres import create_database, drop_database
from emulators.process import ServiceUnavailable
from emulators.selfhosted import (
    REPO_ROOT,
    SelfhostedConfig,
    SelfhostedStack,
    settings_from_env,
    start_selfhosted,
)
from tests.e2e.test_postman import newman, run_collection
from tests.integration.availability import missing
from tests.integration.postgres_service import postgres_admin_url

__all__ = ["newman", "postgres_admin_url"]

FAST = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}
# Long enough on a CPU to kill the worker mid-generation: about 1 s a step on two cores. (At
# 512x512 one step of the tiny model takes about 9 s there, 50 steps several minutes.)
LONG = {"width": 256, "height": 256, "num_inference_steps": 12, "guidance_scale": 7.5}
# Short, so that a killed worker's task comes back soon; still above the generations here.
VISIBILITY_TIMEOUT_S = 30
LEASE_S = 10
SWEEP_INTERVAL_S = 15  # the default OUTBOX_SWEEP_INTERVAL_S


@pytest.fixture(scope="module")
def selfhosted(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> Iterator[SelfhostedStack]:
    """The stack on its own PostgreSQL database, Redis key prefix, queue and dead-letter list,
    with a short visibility timeout and lease so that a killed worker's job comes back soon."""
    state = tmp_path_factory.mktemp("selfhosted")
    token = secrets.token_hex(4)
    database = f"txt2img_e2e_{os.getpid()}_{token}"
    database_url = create_database(postgres_admin_url, database)
    prefix = f"txt2img-e2e:{token}:"
    config = SelfhostedConfig(
        state_dir=state / "logs",
        data_dir=state / "data",
        model_path=tiny_model_dir,
        redis_url=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
        database_url=database_url,
        redis_key_prefix=prefix,
        extra_env={
            "CELERY_QUEUE": f"jobs-{token}",
            "CELERY_DEAD_LETTER_KEY": f"{prefix}dead-letters",
            "CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "JOB_LEASE_S": str(LEASE_S),
            "CELERY_RETRY_BACKOFF_S": "1",
            "CELERY_RETRY_BACKOFF_MAX_S": "5",
            "PROGRESS_WRITE_INTERVAL_S": "0.1",
            "RATE_LIMIT_SUBMIT_BURST": "500",
            "RATE_LIMIT_SUBMIT_PER_MINUTE": "600",
            # The tests poll one key every 50 ms while a job starts, past the default read
            # limit (10/s) once a start takes longer than the burst lasts; the limiter has
            # tests of its own.
            "RATE_LIMIT_READ_BURST": "1000",
            "RATE_LIMIT_READ_PER_MINUTE": "6000",
        },
    )
    try:
        try:
            stack = start_selfhosted(config)
        except ServiceUnavailable as exc:
            missing("the self-hosted stack", str(exc))
        try:
            yield stack
        finally:
            stack.stop()
            _delete_keys(stack)
    finally:
        drop_database(postgres_admin_url, database)


def _delete_keys(stack: SelfhostedStack) -> None:
    client = make_redis_client(stack.env["REDIS_URL"])
    try:
        keys = list(client.scan_iter(match=f"{stack.config.redis_key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def client(stack: SelfhostedStack, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url,
        headers={"Authorization": f"Bearer {key or stack.api_key}"},
        timeout=30,
    )


def wait_for(c: httpx.Client, job_id: str, statuses: set[str], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def admin(stack: SelfhostedStack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "api.admin_cli", *args],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"admin {args} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def queue_depths(stack: SelfhostedStack) -> tuple[int, int]:
    """(tasks waiting, tasks handed out and not acknowledged) on the stack's broker."""
    settings = settings_from_env(stack.env)
    client = make_redis_client(stack.env["REDIS_URL"])
    try:
        prefix = key_prefix(settings)
        return int(client.llen(prefix + settings.celery_queue)), int(
            client.hlen(prefix + "unacked")
        )
    finally:
        client.close()


def wait_drained(stack: SelfhostedStack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while queue_depths(stack) != (0, 0):
        assert time.monotonic() < deadline, f"queue not drained: {queue_depths(stack)}"
        time.sleep(0.2)


def runs_of(stack: SelfhostedStack, job_id: str) -> int:
    """How many generations of the job the worker logs show to have succeeded."""
    logs = stack.config.state_dir.glob("celery-worker-*.log")
    return sum(p.read_text(errors="replace").count(f"job {job_id} succeeded") for p in logs)


def job_row(stack: SelfhostedStack, job_id: str) -> Any:
    engine = create_engine(stack.database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT status, attempts FROM jobs WHERE id = :id"), {"id": job_id}
            ).one()
    finally:
        engine.dispose()


def image_files(stack: SelfhostedStack, job_id: str) -> list[Path]:
    return sorted(Path(stack.env["BLOB_DIR"]).glob(f"images/*/{job_id}/*.png"))


class TestCeleryFlow:
    def test_job_goes_through_celery_to_postgres_and_files(
        self, selfhosted: SelfhostedStack
    ) -> None:
        """POST → task on Redis → the Celery worker → PNG on disk, record in PostgreSQL →
        download through the signed URL."""
        with client(selfhosted) as c:
            response = c.post("/v1/jobs", json={"prompt": "a harbour", "seed": 5, **FAST})
            # 200 if the worker finished before the submit answered
            assert response.status_code in (200, 202), response.text
            job_id = response.json()["id"]
            job = wait_for(c, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1
        png = httpx.get(job["images"][0]["url"], timeout=30)
        assert png.status_code == 200
        assert Image.open(io.BytesIO(png.content)).size == (64, 64)
        assert tuple(job_row(selfhosted, job_id)) == ("succeeded", 1)
        assert len(image_files(selfhosted, job_id)) == 1
        wait_drained(selfhosted)

    def test_ten_concurrent_deliveries_run_once(self, selfhosted: SelfhostedStack) -> None:
        """The job's task sent ten more times at once: one generation, every task acked."""
        settings = settings_from_env(selfhosted.env)
        app = selfhosted.celery_app()
        try:
            with client(selfhosted) as c:
                job_id = c.post("/v1/jobs", json={"prompt": "tenfold", **FAST}).json()["id"]

                def send(_: int) -> str:
                    result = app.send_task(TASK_NAME, args=[job_id], queue=settings.celery_queue)
                    return str(result.id)

                with concurrent.futures.ThreadPoolExecutor(10) as pool:
                    task_ids = list(pool.map(send, range(10)))
                job = wait_for(c, job_id, {"succeeded", "failed"})
        finally:
            app.close()
        assert len(set(task_ids)) == 10
        assert job["status"] == "succeeded", job
        wait_drained(selfhosted)
        with client(selfhosted) as c:
            assert c.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1
        assert runs_of(selfhosted, job_id) == 1
        assert "0 dead letter(s) selected" in admin(
            selfhosted, "dead-letters", "purge", "--all", "--dry-run"
        )

    def test_admin_lists_no_dead_letters_on_a_healthy_stack(
        self, selfhosted: SelfhostedStack
    ) -> None:
        """`txt2img-admin dead-letters list` works with JOB_QUEUE=celery."""
        listing = admin(selfhosted, "dead-letters", "list")
        assert listing.splitlines() == ["job_id\tdeliveries\tsource\tage_s\tstatus\tlast_error"]

    def test_celery_inspect_sees_the_worker_and_its_queue(
        self, selfhosted: SelfhostedStack
    ) -> None:
        """The documented `celery -A gpu_worker.celery_worker:app inspect` works with the
        service's settings (and loads no model)."""
        settings = settings_from_env(selfhosted.env)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gpu_worker.celery_worker:app",
                "inspect",
                "active_queues",
                f"--destination={selfhosted.worker_name}",
                "--timeout=10",
            ],
            env=selfhosted.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert selfhosted.worker_name in done.stdout
        assert f"'name': '{settings.celery_queue}'" in done.stdout


def test_postman_collection_against_the_selfhosted_stack(
    newman: Path, selfhosted: SelfhostedStack, tmp_path: Path
) -> None:
    """Every route, happy and unhappy, through Celery, PostgreSQL, files and Redis."""
    other = admin(selfhosted, "keys", "create", "--owner", "postman-other").strip().splitlines()
    run_collection(newman, tmp_path, selfhosted.api_url, selfhosted.api_key, other[-1])


class TestWorkerKilled:
    def test_sigkill_mid_generation_then_restart_completes_the_job_once(
        self, selfhosted: SelfhostedStack
    ) -> None:
        """SIGKILL the worker while it generates; start it again. Once the dead worker's lease
        lapses, the API's sweep hands the job to the queue again (before the unacknowledged
        task would come back after the visibility timeout, which then finds it done or
        running and is acknowledged); the job finishes once, on its second attempt, with one
        set of images."""
        wait_drained(selfhosted)
        with client(selfhosted) as c:
            job_id = c.post("/v1/jobs", json={"prompt": "a long one", **LONG}).json()["id"]
            deadline = time.monotonic() + 120
            while True:
                job = c.get(f"/v1/jobs/{job_id}").json()
                if job["status"] == "running" and job["progress"] > 0:
                    break
                assert job["status"] in ("queued", "running"), job
                assert time.monotonic() < deadline, f"never started: {job}"
                time.sleep(0.05)
            killed_at = time.monotonic()
            selfhosted.kill_worker()
            job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "running", job
            assert queue_depths(selfhosted)[1] == 1  # the task is with the broker, unacked

            selfhosted.start_worker()
            job = wait_for(c, job_id, {"succeeded", "failed", "canceled"}, timeout=180)
            recovered_after = time.monotonic() - killed_at
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert len(job["images"]) == 1
        assert len(image_files(selfhosted, job_id)) == 1
        # The worker logs the run just after recording it: the line may trail the status.
        deadline = time.monotonic() + 10
        while runs_of(selfhosted, job_id) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runs_of(selfhosted, job_id) == 1
        # Within the lease, a sweep (15 s, jittered) and a cold worker's start and run.
        assert recovered_after < LEASE_S + 1.2 * SWEEP_INTERVAL_S + 60, recovered_after
        wait_drained(selfhosted)
        assert "0 dead letter(s) selected" in admin(
            selfhosted, "dead-letters", "purge", "--all", "--dry-run"
        )
