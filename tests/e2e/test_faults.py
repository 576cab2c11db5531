"""Faults injected into the emulator stack's real processes (issue 5): a worker killed
mid-generation, the job store and the blob store cut off by a proxy, Redis stopped under
traffic, poison messages on the real topic.

The module's stack borrows the session stack's emulators (Pub/Sub under topic names of its
own, Firestore under a collection prefix of its own, the GCS emulator) and runs its own worker
and API, each reaching Firestore and Cloud Storage through a TcpProxy (tests/faults) that a
test cuts and restores. Its lease is short (5 s) and its retry backoff 1-2 s, so a fault
heals within seconds.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from emulators.postgres import create_database, drop_database
from emulators.process import Service, free_port, stop_service
from emulators.stack import Stack, _start_app, start_stack
from tests.e2e.test_emulator_stack import FAST, client, wait_for
from tests.emulator_stack_fixture import config_beside
from tests.faults.tcp_proxy import TcpProxy
from tests.integration.postgres_service import postgres_admin_url, unique_database_name
from tests.integration.test_redis_outage import DedicatedRedis

__all__ = ["postgres_admin_url"]  # a fixture, imported to be found

LEASE_S = 5
# Slow enough to be killed mid-way (about 2 s for its two images on two idle CPU cores; the
# test kills it at the first progress write), cheap enough to run twice.
SLOW = {"width": 96, "height": 96, "num_inference_steps": 40, "guidance_scale": 1.0}
# FIRESTORE_TIMEOUT_S in the module's stack: how long a call to a cut-off store may take.
# Above the emulator's ~2 s lock timeout, which resolves contending transactions.
STORE_DEADLINE_S = 3.0
TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class FaultStack:
    stack: Stack
    firestore_for_worker: TcpProxy
    firestore_for_api: TcpProxy
    storage: TcpProxy

    @property
    def worker_log(self) -> Path:
        port = self.stack.worker_url.rsplit(":", 1)[1]
        return self.stack.config.state_dir / f"worker-{port}.log"

    def worker_log_text(self) -> str:
        return self.worker_log.read_text(errors="replace")

    def runs_of(self, job_id: str) -> int:
        """Generations of the job that the worker finished (its log, across restarts)."""
        return len(re.findall(rf"job {job_id} succeeded \(attempt", self.worker_log_text()))

    def blobs_of(self, job_id: str) -> list[str]:
        """Object names under the job's prefix in the GCS emulator, read directly."""
        env = self.stack.env
        response = httpx.get(
            f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{env['GCS_BUCKET']}/o",
            params={"prefix": "images/"},
            timeout=10,
        )
        response.raise_for_status()
        names = [item["name"] for item in response.json().get("items", [])]
        return sorted(n for n in names if f"/{job_id}/" in n)


@pytest.fixture(scope="module")
def faults(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    by_name = {service.name: service for service in stack.services}
    firestore_for_worker = TcpProxy.to(by_name["firestore"].address)
    firestore_for_api = TcpProxy.to(by_name["firestore"].address)
    storage = TcpProxy.to(by_name["gcs"].address)
    proxies = (firestore_for_worker, firestore_for_api, storage)
    state = tmp_path_factory.mktemp("faults")

    def through(firestore: TcpProxy) -> dict[str, str]:
        return {
            "FIRESTORE_EMULATOR_HOST": firestore.address,
            "STORAGE_EMULATOR_HOST": f"http://{storage.address}",
        }

    config = config_beside(
        stack,
        state,
        # Deliveries to a killed worker fail until it is back; they must not exhaust these.
        max_delivery_attempts=30,
        pubsub_prefix=f"faults-{secrets.token_hex(3)}-",
        extra_env={
            "PROGRESS_WRITE_INTERVAL_S": "0.1",
            "JOB_LEASE_S": str(LEASE_S),
            # Each worker start counts twice in the kill test; the tiny model needs no warm-up.
            "WARM_UP": "false",
            "FIRESTORE_TIMEOUT_S": str(STORE_DEADLINE_S),
            "GCS_TIMEOUT_S": "2",
            "GCS_RETRY_TIMEOUT_S": "1",
            "RATE_LIMIT_SUBMIT_BURST": "500",
            "RATE_LIMIT_SUBMIT_PER_MINUTE": "600",
        },
        worker_env=through(firestore_for_worker),
        api_env=through(firestore_for_api),
    )
    try:
        running = start_stack(config)
    except BaseException:
        for proxy in proxies:
            proxy.close()
        raise
    try:
        yield FaultStack(running, firestore_for_worker, firestore_for_api, storage)
    finally:
        running.stop()
        for proxy in proxies:
            proxy.close()


@pytest.fixture(autouse=True)
def _proxies_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test must not leave the module's stack cut off for the next one."""
    yield
    if "faults" in request.fixturenames:
        fs: FaultStack = request.getfixturevalue("faults")
        for proxy in (fs.firestore_for_worker, fs.firestore_for_api, fs.storage):
            proxy.restore()


def until(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; that value, or a failure naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def submit(c: httpx.Client, **body: Any) -> str:
    response = c.post("/v1/jobs", json=body)
    # 200 when the worker finished the job before the submit answered (it can, for FAST).
    assert response.status_code in (200, 202), response.text
    return str(response.json()["id"])


class TestWorkerKilled:
    def test_sigkill_mid_generation_is_taken_over_and_succeeds_once(
        self, faults: FaultStack
    ) -> None:
        """SIGKILL the push worker while it generates, start it again: Pub/Sub redelivers
        the unanswered push, the new worker finds the lease expired, takes the job over and
        finishes it once, on attempt 2, with one set of images in the bucket."""
        stack = faults.stack
        with client(stack) as c:
            job_id = submit(c, prompt="killed mid-way", num_images=2, **SLOW)
            running = until(
                lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["progress"] > 0 and j,
                timeout=60,
                what="the generation to start",
            )
            assert running["status"] == "running" and running["attempts"] == 1, running
            stack.kill_worker()
            job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "running" and job["progress"] < 1, job
            assert faults.blobs_of(job_id) == []

            stack.start_worker()
            job = wait_for(c, job_id, TERMINAL, timeout=90)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert len(job["images"]) == 2
        assert len(faults.blobs_of(job_id)) == 2
        # The worker logs the run just after recording it: the line may trail the status.
        until(lambda: faults.runs_of(job_id) >= 1, timeout=10, what="the worker's log line")
        assert faults.runs_of(job_id) == 1


class TestJobStoreUnreachable:
    def test_firestore_cut_off_gives_fast_503s_and_nacks_then_everything_completes(
        self, faults: FaultStack
    ) -> None:
        """While the worker cannot reach Firestore its push deliveries answer 503 within the
        store deadline (Pub/Sub redelivers); while the API cannot, it answers 503
        problem+json with Retry-After within the deadline, not after the client's. Once
        Firestore is reachable again the job completes, claimed once."""
        stack = faults.stack
        faults.firestore_for_worker.cut("refuse")
        with client(stack) as c:
            job_id = submit(c, prompt="store outage", **FAST)
            # The worker's deliveries fail meanwhile.
            faults.firestore_for_api.cut("blackhole")
            for method, path, body in (
                ("GET", f"/v1/jobs/{job_id}", None),
                ("POST", "/v1/jobs", {"prompt": "refused", **FAST}),
            ):
                started = time.monotonic()
                response = c.request(method, path, json=body)
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["retry-after"].isdigit()
                assert response.json()["code"] == "service-unavailable"
                # Within the store deadline (twice: a call and its retry), far from 60 s.
                assert elapsed < 3 * STORE_DEADLINE_S, f"{method} took {elapsed:.1f} s"

            nacked = f"job {job_id}: job store unavailable at claim"
            until(
                lambda: faults.worker_log_text().count(nacked) >= 2,
                timeout=30,
                what="two deliveries refused by the worker",
            )
            faults.firestore_for_api.restore()
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
            faults.firestore_for_worker.restore()
            job = wait_for(c, job_id, TERMINAL, timeout=60)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1
        # The worker logs the run just after recording it: the line may trail the status.
        until(lambda: faults.runs_of(job_id) >= 1, timeout=10, what="the worker's log line")
        assert faults.runs_of(job_id) == 1


class TestBlobWriteFails:
    def test_a_failed_upload_is_retried_and_never_succeeds_without_its_images(
        self, faults: FaultStack
    ) -> None:
        """Cloud Storage refuses the worker's uploads for one delivery: the job goes back to
        queued (storage_unavailable, 503), and once storage is back the redelivery stores
        both images and succeeds on attempt 2. No poll ever sees it succeeded with fewer."""
        stack = faults.stack
        faults.storage.cut("refuse")
        seen: list[dict[str, Any]] = []
        with client(stack) as c:

            def poll(job_id: str) -> dict[str, Any]:
                job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
                seen.append(job)
                return job

            job_id = submit(c, prompt="no storage", num_images=2, **FAST)
            released = until(
                lambda: ((j := poll(job_id))["error"] is not None or j["status"] in TERMINAL) and j,
                timeout=30,
                what="the failed upload to release the job",
            )
            assert released["status"] == "queued", released
            assert released["error"]["code"] == "storage_unavailable"
            assert faults.blobs_of(job_id) == []

            faults.storage.restore()
            job = until(
                lambda: (j := poll(job_id))["status"] in TERMINAL and j,
                timeout=60,
                what="the retry to finish",
            )
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert job["error"] is None
        assert len(job["images"]) == 2
        assert len(faults.blobs_of(job_id)) == 2
        assert all(len(j["images"]) == 2 for j in seen if j["status"] == "succeeded")
        assert all(
            httpx.get(image["url"], timeout=10).status_code == 200 for image in job["images"]
        )


class TestPoisonMessages:
    def test_poison_is_acknowledged_once_and_the_worker_keeps_serving(
        self, faults: FaultStack
    ) -> None:
        """Unparseable data, and a job id that does not exist, published to the real topic:
        each is delivered once and acknowledged (docs/operations.md), not redelivered over
        several backoff periods; a good job published after them succeeds."""
        from google.cloud import pubsub_v1

        stack = faults.stack
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(stack.env["GCP_PROJECT"], stack.env["PUBSUB_TOPIC"])
        ghost = f"job-that-never-was-{secrets.token_hex(4)}"
        # Two maximum backoffs after publishing: a message answered with anything but 2xx
        # would have come back by then.
        quiet_from = time.monotonic() + 2 * stack.config.max_backoff_s + 1
        poison = {
            "unparseable": publisher.publish(topic, b"\xff\x00 not json").result(timeout=30),
            "unknown job": publisher.publish(
                topic, f'{{"job_id": "{ghost}"}}'.encode(), job_id=ghost
            ).result(timeout=30),
        }
        with client(stack) as c:
            job_id = submit(c, prompt="after the poison", **FAST)
            job = wait_for(c, job_id, TERMINAL, timeout=60)
        assert job["status"] == "succeeded", job

        def deliveries(message_id: str) -> int:
            return len(re.findall(rf"push message {message_id}\b", faults.worker_log_text()))

        until(
            lambda: all(deliveries(m) >= 1 for m in poison.values()),
            timeout=30,
            what="both poison messages to be delivered",
        )
        while True:
            assert {k: deliveries(m) for k, m in poison.items()} == {k: 1 for k in poison}
            if time.monotonic() > quiet_from:
                break
            time.sleep(0.2)
        assert "names no job; acknowledged and dropped" in faults.worker_log_text()
        assert f"for job {ghost} (delivery" in faults.worker_log_text()


class TestRedisOutage:
    def test_limiter_and_cache_fail_open_while_redis_is_down_and_recover_after(
        self, faults: FaultStack, tmp_path: Path
    ) -> None:
        """An API process on a Redis of its own: the submit limit holds; with Redis stopped
        every request succeeds (fail open, docs/operations.md); with Redis started again the
        same process enforces the limit again, without a restart."""
        redis = DedicatedRedis(tmp_path / "redis")
        redis.start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **faults.stack.env,
            **faults.stack.config.api_env,
            "PORT": str(port),
            "REDIS_URL": redis.url,
            "RATE_LIMIT_SUBMIT_BURST": "2",
            "RATE_LIMIT_SUBMIT_PER_MINUTE": "1",
        }
        api: Service | None = None
        try:
            api = _start_app("api", "api", url, env, faults.stack.config.state_dir)
            headers = {"Authorization": f"Bearer {faults.stack.api_key}"}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:

                def burst(n: int, label: str) -> list[int | str]:
                    """Status codes, with 200 and 202 both as "accepted": the worker may
                    finish a FAST job before its submit is answered."""
                    body = {"prompt": label, **FAST}
                    codes = [c.post("/v1/jobs", json=body).status_code for _ in range(n)]
                    return ["accepted" if code in (200, 202) else code for code in codes]

                assert burst(3, "before") == ["accepted", "accepted", 429]

                redis.stop()
                started = time.monotonic()
                assert burst(4, "during") == ["accepted"] * 4
                listed = c.get("/v1/jobs", params={"limit": 1})
                assert listed.status_code == 200, listed.text
                read = c.get(f"/v1/jobs/{listed.json()['items'][0]['id']}")
                assert read.status_code == 200, read.text
                assert time.monotonic() - started < 10

                redis.start()  # same port, empty: a fresh bucket of 2
                assert burst(3, "after") == ["accepted", "accepted", 429]
        finally:
            if api is not None:
                stop_service(api)
            redis.stop()


@pytest.fixture
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    name = unique_database_name("txt2img_faults")
    url = create_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, name)


class TestPostgresUnreachable:
    def test_embedded_api_answers_503_fast_and_recovers_when_postgres_is_back(
        self, postgres_database: str, tiny_model_dir: Path, tmp_path: Path
    ) -> None:
        """The embedded service on PostgreSQL behind a proxy: while new connections hang
        (blackhole) requests get 503 problem+json with Retry-After within the connect
        timeout; once PostgreSQL is reachable the same process serves and generates again."""
        parsed = make_url(postgres_database)
        proxy = TcpProxy.to(f"{parsed.host}:{parsed.port}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "APP_ENV": "local",
            "PORT": str(port),
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": parsed.set(host=proxy.host, port=proxy.port).render_as_string(
                hide_password=False
            ),
            "DATABASE_CONNECT_TIMEOUT_S": "2",
            "WARM_UP": "false",
            "MODEL_PATH": str(tiny_model_dir),
            "BOOTSTRAP_API_KEY": "faults-postgres-key-0123456789",
            "TRANSFORMERS_VERBOSITY": "error",
        }
        api: Service | None = None
        try:
            api = _start_app("api-postgres", "api", url, env, tmp_path / "logs")
            headers = {"Authorization": f"Bearer {env['BOOTSTRAP_API_KEY']}"}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
                first = c.post("/v1/jobs", json={"prompt": "before", **FAST})
                assert first.status_code == 202, first.text
                job_id = first.json()["id"]
                assert wait_for(c, job_id, TERMINAL)["status"] == "succeeded"

                proxy.cut("blackhole")
                for method, path, body in (
                    ("GET", f"/v1/jobs/{job_id}", None),
                    ("POST", "/v1/jobs", {"prompt": "during", **FAST}),
                ):
                    started = time.monotonic()
                    response = c.request(method, path, json=body)
                    elapsed = time.monotonic() - started
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"].isdigit()
                    assert response.json()["code"] == "service-unavailable"
                    # One connect attempt of DATABASE_CONNECT_TIMEOUT_S (2 s), not the
                    # default's 5 s, nor a client's deadline.
                    assert elapsed < 4.5, f"{method} took {elapsed:.1f} s"

                proxy.restore()
                again = c.post("/v1/jobs", json={"prompt": "after", **FAST})
                assert again.status_code == 202, again.text
                assert wait_for(c, again.json()["id"], TERMINAL)["status"] == "succeeded"
                assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
        finally:
            if api is not None:
                stop_service(api)
            proxy.close()
