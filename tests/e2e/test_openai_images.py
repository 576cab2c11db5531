"""The OpenAI Images dialect on the running service, driven by the real, unmodified `openai`
package: on the embedded profile (`python -m api`, inline worker, tiny model) and on the
emulator stack (Pub/Sub push to the worker process, Firestore, GCS, Redis).

The same scenarios run on both: generations by URL and inline, a wrong key, a bad size, the
submit rate limit (an API process of its own with a low RATE_LIMIT_SUBMIT_*), a caller that
hangs up (its job ends canceled), and a second key that cannot reach the first key's jobs.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from emulators.process import free_port, stop_service
from emulators.stack import Stack, _start_app
from tests.e2e.conftest import BOOTSTRAP_KEY, RunningService, running_service
from tests.e2e.test_emulator_stack import admin

# On the tiny model at DEFAULT_STEPS (25) two 256x256 images take about 30 s on two cores,
# a second or so a step: still running when their caller hangs up after one second, and
# stopped within a step of the cancel.
SLOW = {"prompt": "a long exposure of a slow night", "size": "256x256", "n": 2}
LIMITED = {"RATE_LIMIT_SUBMIT_BURST": "2", "RATE_LIMIT_SUBMIT_PER_MINUTE": "1"}


def unique(owner: str) -> str:
    return f"{owner}-{uuid.uuid4().hex[:8]}"


def sdk(base_url: str, key: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=120)


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def jobs_of(base_url: str, key: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# --- the scenarios, each against a base URL ---------------------------------------------


def generates_by_url_and_inline(base_url: str, key: str) -> None:
    client = sdk(base_url, key)
    result = client.images.generate(prompt="a lighthouse at dawn", n=2, size="96x64")
    urls = [image.url for image in result.data or []]
    assert len(urls) == 2 and all(url and url.startswith("http") for url in urls), urls
    for url in urls:
        download = httpx.get(str(url), timeout=30)  # the signed URL is the credential
        assert download.status_code == 200
        assert png_size(download.content) == (96, 64)
    inline = client.images.generate(
        prompt="a lighthouse at dusk", size="64x80", response_format="b64_json"
    )
    [image] = inline.data or []
    assert image.url is None
    assert png_size(base64.b64decode(image.b64_json or "")) == (64, 80)
    [model] = list(client.models.list())
    assert jobs_of(base_url, key)[0]["model"] == model.id


def refuses_a_wrong_key_and_a_bad_size(base_url: str, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as denied:
        sdk(base_url, "not-a-key").images.generate(prompt="x")
    assert denied.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(base_url, key).images.generate(prompt="x", size="1000x1001")
    assert (bad.value.param, bad.value.code) == ("size", "invalid_value")


def limits_the_submit_rate(base_url: str, key: str) -> None:
    """With a burst of 2, the third generation is a RateLimitError with Retry-After."""
    client = sdk(base_url, key)
    for i in range(2):
        assert len(client.images.generate(prompt=f"limit {i}", size="64x64").data or []) == 1
    with pytest.raises(openai.RateLimitError) as limited:
        client.images.generate(prompt="one too many", size="64x64")
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert len(jobs_of(base_url, key)) == 2


def cancels_the_job_of_a_caller_that_hangs_up(base_url: str, key: str) -> None:
    """A raw request that gives up after a second: its job ends canceled, imageless."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base_url}/v1/images/generations",
            json=SLOW,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30, read=1),
        )
    deadline = time.monotonic() + 60
    [job] = jobs_of(base_url, key)
    while job["status"] != "canceled" and time.monotonic() < deadline:
        assert job["status"] in {"queued", "running"}, job
        time.sleep(0.2)
        [job] = jobs_of(base_url, key)
    assert job["status"] == "canceled", job
    assert job["images"] == []


def keeps_keys_apart(base_url: str, alice: str, bob: str) -> None:
    """Bob cannot fetch or list Alice's job, and her Idempotency-Key does not reach it."""
    shared = {"Idempotency-Key": f"shared-{time.time_ns()}"}
    first = sdk(base_url, alice).images.with_raw_response.generate(
        prompt="alice's lighthouse", size="64x64", extra_headers=shared
    )
    second = sdk(base_url, bob).images.with_raw_response.generate(
        prompt="alice's lighthouse", size="64x64", extra_headers=shared
    )
    alice_job, bob_job = first.headers["location"], second.headers["location"]
    assert alice_job != bob_job  # his own job, not a replay of hers
    as_bob = {"Authorization": f"Bearer {bob}"}
    assert httpx.get(alice_job, headers=as_bob, timeout=30).status_code == 404
    assert [job["id"] for job in jobs_of(base_url, bob)] == [bob_job.rsplit("/", 1)[1]]
    assert first.parse().data and second.parse().data


# --- the embedded profile ------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_embedded(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An embedded service of its own (its own data folder) with a submit burst of 2."""
    data_dir = tmp_path_factory.mktemp("openai-limited")
    with running_service(tiny_model_dir, data_dir, WARM_UP="false", **LIMITED) as running:
        yield running.base_url


class TestEmbedded:
    def test_generates_by_url_and_inline(self, service: RunningService) -> None:
        """images.generate: two 96x64 PNGs by URL, one 64x80 PNG as b64_json."""
        generates_by_url_and_inline(service.base_url, embedded_key_for(service, "oai-gen"))

    def test_refuses_a_wrong_key_and_a_bad_size(self, service: RunningService) -> None:
        """openai.AuthenticationError and openai.BadRequestError."""
        refuses_a_wrong_key_and_a_bad_size(service.base_url, BOOTSTRAP_KEY)

    def test_limits_the_submit_rate(self, limited_embedded: str) -> None:
        """openai.RateLimitError once the key's submit burst is spent."""
        limits_the_submit_rate(limited_embedded, BOOTSTRAP_KEY)

    def test_cancels_the_job_of_a_caller_that_hangs_up(self, service: RunningService) -> None:
        """The held request's client disconnects: its job is canceled, not left running."""
        cancels_the_job_of_a_caller_that_hangs_up(
            service.base_url, embedded_key_for(service, "oai-hangs-up")
        )

    def test_keeps_keys_apart(self, service: RunningService) -> None:
        """A second key cannot see or fetch the first key's jobs."""
        alice, bob = (embedded_key_for(service, owner) for owner in ("oai-alice", "oai-bob"))
        keeps_keys_apart(service.base_url, alice, bob)


def embedded_key_for(service: RunningService, owner: str) -> str:
    """A key of an owner of its own (the scenarios count the owner's jobs)."""
    return service.admin("keys", "create", "--owner", unique(owner)).strip().splitlines()[-1]


# --- the emulator stack ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_stack_api(stack: Stack) -> Iterator[str]:
    """A second API process on the session's stack (same emulators, Redis and worker) with a
    submit burst of 2."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**stack.env, **stack.config.api_env, "PORT": str(port), **LIMITED}
    api = _start_app("api-openai-limited", "api", url, env, stack.config.state_dir)
    try:
        yield url
    finally:
        stop_service(api)


def stack_key(stack: Stack, owner: str) -> str:
    return admin(stack, "keys", "create", "--owner", unique(owner)).strip().splitlines()[-1]


class TestEmulatorStack:
    def test_generates_by_url_and_inline(self, stack: Stack) -> None:
        """Through Pub/Sub and the worker process; the URLs are the GCS emulator's, signed."""
        generates_by_url_and_inline(stack.api_url, stack_key(stack, "oai-gen"))

    def test_refuses_a_wrong_key_and_a_bad_size(self, stack: Stack) -> None:
        refuses_a_wrong_key_and_a_bad_size(stack.api_url, stack.api_key)

    def test_limits_the_submit_rate(self, stack: Stack, limited_stack_api: str) -> None:
        """The Redis limiter: a fresh key's third generation is refused."""
        limits_the_submit_rate(limited_stack_api, stack_key(stack, "oai-limited"))

    def test_cancels_the_job_of_a_caller_that_hangs_up(self, stack: Stack) -> None:
        """The cancel reaches the worker process through the job store."""
        cancels_the_job_of_a_caller_that_hangs_up(stack.api_url, stack_key(stack, "oai-hangs"))

    def test_keeps_keys_apart(self, stack: Stack) -> None:
        keeps_keys_apart(stack.api_url, stack_key(stack, "oai-alice"), stack_key(stack, "oai-bob"))
