"""The service as a newcomer runs it: real HTTP, SQLite, files, the tiny diffusers model."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
from PIL import Image

from tests.e2e.conftest import BOOTSTRAP_KEY, RunningService

FAST = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}


def wait_for(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def download_all(job: dict[str, Any]) -> list[bytes]:
    # Signed URLs carry their own authorisation: no API key is sent.
    return [httpx.get(image["url"], timeout=30).content for image in job["images"]]


class TestEmbeddedService:
    def test_submit_poll_download(self, service: RunningService) -> None:
        """A job submitted over HTTP succeeds within seconds and yields PNGs of the asked size."""
        with service.client() as client:
            created = client.post(
                "/v1/jobs",
                json={
                    "prompt": "a watercolor lighthouse",
                    "seed": 3,
                    "num_images": 2,
                    **FAST,
                    "width": 96,
                },
            )
            assert created.status_code == 202
            location = created.headers["location"]
            job = wait_for(client, created.json()["id"], {"succeeded", "failed"})
            assert client.get(location).json()["id"] == job["id"]
        assert job["status"] == "succeeded", job
        assert job["progress"] == 1.0
        assert [i["seed"] for i in job["images"]] == [3, 4]
        pngs = download_all(job)
        for png in pngs:
            image = Image.open(io.BytesIO(png))
            assert (image.format, image.size, image.mode) == ("PNG", (96, 64), "RGB")
        assert pngs[0] != pngs[1]

    def test_same_seed_and_params_give_identical_bytes(self, service: RunningService) -> None:
        """Reproducibility: the same request with the same seed yields the same PNG bytes."""
        body = {"prompt": "a red bicycle", "seed": 1234, **FAST}
        with service.client() as client:
            first, second = (client.post("/v1/jobs", json=body).json()["id"] for _ in range(2))
            jobs = [wait_for(client, j, {"succeeded", "failed"}) for j in (first, second)]
        assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
        assert download_all(jobs[0]) == download_all(jobs[1])

    def test_defaults_come_from_the_model(self, service: RunningService) -> None:
        """Without width and height the job uses the model's own size (64 for the tiny one)."""
        with service.client() as client:
            job = client.post("/v1/jobs", json={"prompt": "x", "num_inference_steps": 1}).json()
        assert (job["params"]["width"], job["params"]["height"]) == (64, 64)

    def test_progress_is_visible_and_cancel_stops_a_running_job(
        self, service: RunningService
    ) -> None:
        """A long job shows progress while running, and canceling it leaves no images."""
        body = {
            "prompt": "a long one",
            "seed": 9,
            "width": 256,
            "height": 256,
            "num_inference_steps": 50,
            "guidance_scale": 7.5,
        }
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            deadline = time.monotonic() + 60
            job = client.get(f"/v1/jobs/{job_id}").json()
            while not (job["status"] == "running" and job["progress"] > 0):
                assert time.monotonic() < deadline and job["status"] in {"queued", "running"}
                time.sleep(0.05)
                job = client.get(f"/v1/jobs/{job_id}").json()
            assert 0 < job["progress"] < 1
            canceled = client.delete(f"/v1/jobs/{job_id}")
            assert canceled.status_code == 200
            assert canceled.json()["status"] == "canceled"
            # The worker notices at its next check; the record must stay canceled for good.
            time.sleep(1.0)
            final = client.get(f"/v1/jobs/{job_id}").json()
            assert final["status"] == "canceled"
            assert final["images"] == []
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 409
            # The worker is free again: a new job still completes.
            quick = client.post("/v1/jobs", json={"prompt": "after", **FAST}).json()["id"]
            assert wait_for(client, quick, {"succeeded", "failed"})["status"] == "succeeded"

    def test_second_key_cannot_see_list_cancel_or_download(self, service: RunningService) -> None:
        """A key made with the admin command is isolated from the bootstrap key's jobs."""
        bob_key = service.admin("keys", "create", "--owner", "bob").strip().splitlines()[-1]
        with service.client() as alice, service.client(bob_key) as bob:
            job_id = alice.post("/v1/jobs", json={"prompt": "private", **FAST}).json()["id"]
            job = wait_for(alice, job_id, {"succeeded"})
            assert bob.get(f"/v1/jobs/{job_id}").status_code == 404
            assert job_id not in [j["id"] for j in bob.get("/v1/jobs").json()["items"]]
            assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404
            # Bob's own signed URL, pointed at Alice's image, is refused.
            bob_job = bob.post("/v1/jobs", json={"prompt": "mine", **FAST}).json()["id"]
            bob_url = wait_for(bob, bob_job, {"succeeded"})["images"][0]["url"]
            forged = bob_url.split("?")[0].rsplit("/", 3)[0]
            alice_path = job["images"][0]["url"].split("?")[0].rsplit("/", 3)[1:]
            forged = "/".join([forged, *alice_path]) + "?" + bob_url.split("?")[1]
            assert httpx.get(forged).status_code == 403
            assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"

    def test_revoked_key_is_refused_at_once(self, service: RunningService) -> None:
        """Revoking with the admin command takes effect on the running service."""
        out = service.admin("keys", "create", "--owner", "carol").strip().splitlines()
        key = out[-1]
        key_id = out[0].split()[2]
        with service.client(key) as carol:
            assert carol.get("/v1/jobs").status_code == 200
            service.admin("keys", "revoke", key_id)
            assert carol.get("/v1/jobs").status_code == 401

    def test_tampered_or_expired_urls_are_403(self, service: RunningService) -> None:
        """A signed URL with an edited expiry or signature is refused."""
        with service.client() as client:
            job_id = client.post("/v1/jobs", json={"prompt": "sig", **FAST}).json()["id"]
            url = wait_for(client, job_id, {"succeeded"})["images"][0]["url"]
        base, query = url.split("?")
        params = dict(p.split("=") for p in query.split("&"))
        assert httpx.get(url).status_code == 200
        later = f"{base}?expires={int(params['expires']) + 3600}&sig={params['sig']}"
        expired = f"{base}?expires=1000&sig={params['sig']}"
        bad_sig = f"{base}?expires={params['expires']}&sig={'0' * 64}"
        for tampered in (later, expired, bad_sig):
            response = httpx.get(tampered)
            assert response.status_code == 403
            assert response.headers["content-type"] == "application/problem+json"

    def test_bad_input_gets_problem_json_and_creates_nothing(self, service: RunningService) -> None:
        """Invalid requests over real HTTP are refused with problem documents."""
        owner_key = service.admin("keys", "create", "--owner", "erin").strip().splitlines()[-1]
        with service.client(owner_key) as client:
            cases = [
                (client.post("/v1/jobs", json={"prompt": "x", "width": 65}), 422),
                (client.post("/v1/jobs", json={"prompt": "x", "bogus": 1}), 422),
                (
                    client.post(
                        "/v1/jobs", content=b"prompt=x", headers={"Content-Type": "text/plain"}
                    ),
                    415,
                ),
                (
                    client.post(
                        "/v1/jobs",
                        content=b"{" + b" " * 20000 + b"}",
                        headers={"Content-Type": "application/json"},
                    ),
                    413,
                ),
                (httpx.post(f"{service.base_url}/v1/jobs", json={"prompt": "x"}), 401),
            ]
            for response, status in cases:
                assert response.status_code == status, response.text
                assert response.headers["content-type"] == "application/problem+json"
            assert client.get("/v1/jobs").json()["items"] == []

    def test_zz_logs_hold_no_credentials(self, service: RunningService) -> None:
        """After all the traffic above, the server log has no key and no URL signature."""
        import re

        log = (service.data_dir / "server.log").read_text()
        assert "GET /v1/blobs/" in log  # the access log is on, so the check means something
        assert BOOTSTRAP_KEY not in log
        assert not re.search(r"sig=[0-9a-f]{16,}", log)
