"""The AUTOMATIC1111 dialect over real HTTP, with requests shaped exactly as A1111 clients
send them (webuiapi's payload with its defaults, HTTP Basic with the API key as the password):
on the embedded profile (`python -m api`, jobs inline on the tiny model) and on the emulator
stack (Pub/Sub push to the worker, GCS and Firestore emulators)."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from emulators.stack import Stack
from tests.a1111_clients import WEBUIAPI_TXT2IMG
from tests.e2e.conftest import BOOTSTRAP_KEY, RunningService


def txt2img(base_url: str, key: str, timeout: float = 60, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{base_url}/sdapi/v1/txt2img",
        json={**WEBUIAPI_TXT2IMG, **fields},
        auth=("webui", key),  # `--api-auth webui:<key>`: webuiapi's set_auth, requests' auth
        timeout=timeout,
    )


def check_generated(answer: httpx.Response, *, size: tuple[int, int], count: int) -> Any:
    """The images decode as PNGs of `size`; `info` parses, with consecutive seeds."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    images = [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in body["images"]]
    assert [(image.format, image.size) for image in images] == [("PNG", size)] * count
    info = json.loads(body["info"])
    seed = info["seed"]
    assert info["all_seeds"] == [seed + i for i in range(count)]
    assert (info["width"], info["height"]) == size
    assert body["parameters"]["seed"] == -1
    return info


def native_job(base_url: str, key: str, job_id: str) -> Any:
    answer = httpx.get(
        f"{base_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return answer.json()


class TestEmbeddedService:
    def test_a_webuiapi_call_returns_a_batch_of_pngs_and_info(
        self, service: RunningService
    ) -> None:
        """batch_size 2, seed -1, Basic auth: two 96x64 PNGs, seeds in `info`, a native job."""
        answer = txt2img(
            service.base_url, BOOTSTRAP_KEY, prompt="a lighthouse", batch_size=2, width=96
        )
        info = check_generated(answer, size=(96, 64), count=2)
        assert info["sampler_name"] == "Euler"  # the tiny model's EulerDiscreteScheduler
        job = native_job(service.base_url, BOOTSTRAP_KEY, info["job_id"])
        assert job["status"] == "succeeded"
        assert [image["seed"] for image in job["images"]] == info["all_seeds"]

    def test_what_clients_call_around_txt2img(self, service: RunningService) -> None:
        """Models, options and samplers name what is served; progress is idle between calls."""
        auth = ("webui", BOOTSTRAP_KEY)
        with httpx.Client(base_url=f"{service.base_url}/sdapi/v1", auth=auth) as client:
            [model] = client.get("/sd-models").json()
            options = client.get("/options").json()
            assert options["sd_model_checkpoint"] == model["title"]
            same = client.post("/options", json={"sd_model_checkpoint": model["title"]})
            assert (same.status_code, same.json()) == (200, None)
            assert [s["name"] for s in client.get("/samplers").json()] == ["Euler"]
            assert client.get("/progress").json()["state"]["job_count"] == 0
        refused = httpx.get(f"{service.base_url}/sdapi/v1/options", auth=("webui", "wrong"))
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")

    def test_a_caller_that_hangs_up_leaves_its_job_canceled(self, service: RunningService) -> None:
        """Progress shows the held call's job running; the client gives up, the job is
        canceled."""
        prompt = f"a slow one {uuid.uuid4().hex}"
        auth = ("webui", BOOTSTRAP_KEY)
        with ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(
                txt2img,
                service.base_url,
                BOOTSTRAP_KEY,
                timeout=5,
                prompt=prompt,
                width=256,
                height=256,
                steps=50,
            )
            deadline = time.monotonic() + 5
            state: dict[str, Any] = {}
            while time.monotonic() < deadline and not state.get("sampling_step"):
                progress = httpx.get(f"{service.base_url}/sdapi/v1/progress", auth=auth)
                state = progress.json()["state"]
                time.sleep(0.1)
            assert state["sampling_steps"] == 50 and state["sampling_step"] > 0, state
            with pytest.raises(httpx.ReadTimeout):
                held.result()
        job_id = state["job"]
        deadline = time.monotonic() + 30
        job = native_job(service.base_url, BOOTSTRAP_KEY, job_id)
        while job["status"] != "canceled" and time.monotonic() < deadline:
            time.sleep(0.2)
            job = native_job(service.base_url, BOOTSTRAP_KEY, job_id)
        assert job["params"]["prompt"] == prompt
        assert job["status"] == "canceled"
        assert job["images"] == []


class TestEmulatorStack:
    def test_a_webuiapi_call_goes_through_pubsub_and_gcs(self, stack: Stack) -> None:
        """The same call on the cloud shape: the worker runs the job, the API answers PNGs."""
        answer = txt2img(stack.api_url, stack.api_key, prompt="a harbour", batch_size=2)
        info = check_generated(answer, size=(64, 64), count=2)
        assert native_job(stack.api_url, stack.api_key, info["job_id"])["status"] == "succeeded"
