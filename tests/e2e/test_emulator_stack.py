"""The cloud shape on local stand-ins: API → Pub/Sub emulator → push to the worker process →
GCS emulator + Firestore emulator, Redis for limits; dead letters and their replay."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from emulators.process import free_port
from emulators.stack import REPO_ROOT, Stack

FAST = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}


def client(stack: Stack, key: str | None = None) -> httpx.Client:
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


def admin(stack: Stack, *args: str) -> str:
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


class TestPushFlow:
    def test_job_goes_through_pubsub_to_gcs_and_firestore(
        self, stack: Stack, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """POST → push to the worker → PNG in the GCS emulator, record in Firestore → download."""
        from google.cloud import firestore, storage

        with client(stack) as c:
            job_id = c.post("/v1/jobs", json={"prompt": "a harbour", "seed": 5, **FAST}).json()[
                "id"
            ]
            job = wait_for(c, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        png = httpx.get(job["images"][0]["url"], timeout=30)
        assert png.status_code == 200
        assert Image.open(io.BytesIO(png.content)).size == (64, 64)

        env = stack.env
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", env["FIRESTORE_EMULATOR_HOST"])
        bucket = storage.Client(project=env["GCP_PROJECT"]).bucket(env["GCS_BUCKET"])
        names = [b.name for b in bucket.list_blobs(prefix="images/")]
        assert any(name.endswith(f"/{job_id}/0.png") for name in names)
        record = (
            firestore.Client(project=env["GCP_PROJECT"])
            .collection(f"{env['FIRESTORE_COLLECTION_PREFIX']}jobs")
            .document(job_id)
            .get()
        )
        assert record.exists and record.to_dict()["status"] == "succeeded"

    def test_ten_concurrent_deliveries_run_once_and_all_ack(
        self, stack: Stack, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same push delivered 10 times at once: every answer 2xx, one claim, one
        pipeline run. The job is recorded straight into Firestore and never published, so
        these ten are its only deliveries and they race for the queued job (a job submitted
        through the API is usually finished by its own delivery before they arrive)."""
        from dal.firestore import FirestoreJobStore, make_firestore_client
        from dal.records import utcnow
        from tests.contracts.job_store_contract import make_job, make_params

        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", stack.env["FIRESTORE_EMULATOR_HOST"])
        store = FirestoreJobStore(
            make_firestore_client(stack.env["GCP_PROJECT"]),
            collection_prefix=stack.env["FIRESTORE_COLLECTION_PREFIX"],
        )
        job_id = uuid.uuid4().hex
        now = utcnow()
        store.create(
            make_job(
                job_id,
                owner="bootstrap",  # BOOTSTRAP_API_KEY_OWNER: the stack's key may read it
                params=make_params(prompt="tenfold", **{**FAST, "num_inference_steps": 8}),
                created_at=now,
                updated_at=now,
            )
        )
        with client(stack) as c:
            data = base64.b64encode(json.dumps({"job_id": job_id}).encode()).decode()

            def push(i: int) -> int:
                body = {
                    "message": {
                        "data": data,
                        "attributes": {"job_id": job_id},
                        "messageId": f"dup-{i}",
                    },
                    "subscription": "projects/local-project/subscriptions/jobs-worker",
                }
                return httpx.post(
                    f"{stack.worker_url}/pubsub/push", json=body, timeout=60
                ).status_code

            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                codes = list(pool.map(push, range(10)))
            job = wait_for(c, job_id, {"succeeded", "failed"})
        assert codes == [204] * 10
        assert job["status"] == "succeeded"
        assert job["attempts"] == 1
        # And one pipeline run, counted in the worker's own log.
        log = stack.config.state_dir / f"worker-{stack.worker_url.rsplit(':', 1)[1]}.log"
        assert log.read_text(errors="replace").count(f"job {job_id} succeeded (attempt") == 1

    def test_rate_limit_is_shared_by_two_api_processes(self, stack: Stack) -> None:
        """Two API processes on one Redis enforce one budget per key, not one each."""
        from emulators.process import stop_service
        from emulators.stack import _start_app

        env = {**stack.env, "RATE_LIMIT_SUBMIT_BURST": "3", "RATE_LIMIT_SUBMIT_PER_MINUTE": "1"}
        apis = []
        try:
            for _ in range(2):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                apis.append(
                    (
                        url,
                        _start_app(
                            "api", "api", url, {**env, "PORT": str(port)}, stack.config.state_dir
                        ),
                    )
                )
            key = admin(stack, "keys", "create", "--owner", "limited").strip().splitlines()[-1]
            codes = []
            for i in range(8):
                url = apis[i % 2][0]
                response = httpx.post(
                    f"{url}/v1/jobs",
                    json={"prompt": f"limit {i}", **FAST},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
                codes.append(response.status_code)
        finally:
            for _, service in apis:
                stop_service(service)
        assert codes.count(202) == 3
        assert codes.count(429) == 5


class TestDeadLetters:
    def test_transient_failures_dead_letter_then_replay_succeeds_once(self, stack: Stack) -> None:
        """With storage down every delivery fails; after max attempts the job is
        failed/dead_lettered and listed; once storage is back, a replay succeeds once."""
        from emulators import gcs

        storage_service = next(s for s in stack.services if s.name == "gcs")
        gcs.stop(storage_service)
        try:
            with client(stack) as c:
                job_id = c.post("/v1/jobs", json={"prompt": "doomed", **FAST}).json()["id"]
                job = wait_for(c, job_id, {"failed", "succeeded"}, timeout=120)
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "dead_lettered"
            assert job["attempts"] == stack.config.max_delivery_attempts
            assert "storage_unavailable" in job["error"]["message"]
        finally:
            restarted = gcs.start(storage_service.port, state_dir=stack.config.state_dir)
            stack.services[stack.services.index(storage_service)] = restarted
            gcs.create_bucket(restarted.address, stack.env["GCS_BUCKET"], stack.env["GCP_PROJECT"])

        listing = admin(stack, "dead-letters", "list")
        row = next(line for line in listing.splitlines() if line.startswith(job_id))
        assert row.split("\t")[1] == str(stack.config.max_delivery_attempts)

        dry = admin(stack, "dead-letters", "replay", "--job", job_id, "--dry-run")
        assert f"would-replay\t{job_id}" in dry
        with client(stack) as c:
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "failed"

        replayed = admin(stack, "dead-letters", "replay", "--job", job_id)
        assert f"replayed\t{job_id}" in replayed
        with client(stack) as c:
            job = wait_for(c, job_id, {"succeeded", "failed"}, timeout=60)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == stack.config.max_delivery_attempts + 1
            assert httpx.get(job["images"][0]["url"], timeout=30).status_code == 200
        assert job_id not in admin(stack, "dead-letters", "list")
        again = admin(stack, "dead-letters", "replay", "--job", job_id)
        assert "0 dead letter(s) selected" in again
