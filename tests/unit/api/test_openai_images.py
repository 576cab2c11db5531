"""The OpenAI Images dialect driven by the official `openai` SDK: requests become ordinary jobs
of the caller's key, answered in OpenAI's response shape."""

from __future__ import annotations

import base64
import io
from typing import Any

import openai
import pytest
from PIL import Image

from api.problems import PROBLEM_MEDIA_TYPE
from dal.errors import GenerationError
from dal.records import JobStatus
from dal.settings import Settings
from tests.unit.api.conftest import ApiHarness, make_settings
from tests.unit.api.openai_harness import openai_client, running_worker

SERVED = "pattern-test-model"  # tests.fakes.PatternGenerator's model id


@pytest.fixture
def settings() -> Settings:
    return make_settings(sync_wait_max_s=10.0, prefer_wait_poll_s=0.02)


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def raw_generate(api: ApiHarness, body: dict[str, Any], **headers: str) -> Any:
    return api.client.post("/v1/images/generations", json=body, headers=api.headers(**headers))


class TestGenerate:
    def test_urls_are_absolute_signed_and_fetchable(self, api: ApiHarness) -> None:
        """n=2 at 72x64 gives two URLs that download, without a key, as PNGs of that size."""
        with running_worker(api):
            result = openai_client(api).images.generate(prompt="a fox", n=2, size="72x64")
        assert [d.b64_json for d in result.data or []] == [None, None]
        urls = [d.url or "" for d in result.data or []]
        assert len(urls) == 2 and all(u.startswith("http://testserver/v1/blobs/") for u in urls)
        for url in urls:
            download = api.client.get(url)  # the signed URL is the credential
            assert download.status_code == 200
            assert png_size(download.content) == (72, 64)

    def test_b64_json_carries_the_png(self, api: ApiHarness) -> None:
        """response_format=b64_json inlines each PNG, base64-encoded."""
        with running_worker(api):
            result = openai_client(api).images.generate(
                prompt="a fox", size="64x80", response_format="b64_json"
            )
        [image] = result.data or []
        assert image.url is None
        assert png_size(base64.b64decode(image.b64_json or "")) == (64, 80)

    def test_the_body_is_exactly_openais_shape(self, api: ApiHarness) -> None:
        """`created` (Unix seconds) and `data`, each item with `url` alone: nothing else."""
        with running_worker(api):
            response = raw_generate(api, {"prompt": "a fox", "model": SERVED})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"created", "data"}
        assert isinstance(body["created"], int) and body["created"] > 1_700_000_000
        assert [set(item) for item in body["data"]] == [{"url"}]

    def test_each_call_is_an_ordinary_job_of_the_key(self, api: ApiHarness) -> None:
        """The job shows in GET /v1/jobs with the mapped parameters; Location names it."""
        with running_worker(api):
            response = raw_generate(api, {"prompt": "a heron", "n": 3, "size": "128x96"})
        assert response.status_code == 200, response.text
        [listed] = api.client.get("/v1/jobs", headers=api.headers()).json()["items"]
        assert response.headers["location"] == f"http://testserver/v1/jobs/{listed['id']}"
        assert listed["status"] == "succeeded"
        assert listed["model"] == SERVED
        params = listed["params"]
        assert (params["prompt"], params["width"], params["height"]) == ("a heron", 128, 96)
        assert params["num_images"] == 3
        assert params["num_inference_steps"] == api.services.settings.default_steps
        assert api.services.jobs.get(listed["id"]).owner == "alice"

    def test_defaults_are_the_models_size_and_one_image(self, api: ApiHarness) -> None:
        """Without size (or with size=auto) the model's own size; without n one image."""
        with running_worker(api):
            for size in (None, "auto"):
                body: dict[str, Any] = {"prompt": "x", "size": size}
                result = raw_generate(api, body).json()
                [image] = result["data"]
                assert png_size(api.client.get(image["url"]).content) == (64, 64)

    def test_options_that_mean_nothing_here_are_accepted(self, api: ApiHarness) -> None:
        """quality, style, user, moderation, background, png output, partial images: fine."""
        with running_worker(api):
            result = openai_client(api).images.generate(
                prompt="a fox",
                model=SERVED,
                quality="hd",
                style="vivid",
                user="end-user-42",
                moderation="low",
                background="opaque",
                output_format="png",
                output_compression=80,
                partial_images=2,
                stream=False,
            )
        assert len(result.data or []) == 1

    def test_an_idempotency_key_replays_the_same_job(self, api: ApiHarness) -> None:
        """The same Idempotency-Key and body answer from one job; another body is a 400."""
        client = openai_client(api)
        key = {"Idempotency-Key": "openai-retry-1"}
        with running_worker(api):
            first = client.images.generate(prompt="a fox", extra_headers=key)
            again = client.images.generate(prompt="a fox", extra_headers=key)
        assert len(api.services.jobs.list_by_owner("alice", limit=10).items) == 1
        assert first.created == again.created
        with pytest.raises(openai.BadRequestError) as reused:
            client.images.generate(prompt="another fox", extra_headers=key)
        assert reused.value.code == "idempotency_key_reused"


class TestModels:
    def test_models_names_the_served_model(self, api: ApiHarness) -> None:
        """GET /v1/models lists the model jobs run on, in OpenAI's list shape."""
        client = openai_client(api)
        [model] = list(client.models.list())
        assert (model.id, model.object, model.owned_by) == (SERVED, "model", "txt2img")
        assert client.models.retrieve(SERVED).id == SERVED
        raw = api.client.get("/v1/models", headers=api.headers()).json()
        assert raw["object"] == "list" and set(raw["data"][0]) == {
            "id",
            "object",
            "created",
            "owned_by",
        }

    def test_an_unknown_model_is_not_found(self, api: ApiHarness) -> None:
        """Asking for another model is a 404 naming the served one; no job is made."""
        client = openai_client(api)
        with pytest.raises(openai.NotFoundError) as missing:
            client.images.generate(prompt="a fox", model="dall-e-3")
        assert (missing.value.code, missing.value.param) == ("model_not_found", "model")
        assert SERVED in missing.value.message
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("dall-e-3")
        assert api.services.jobs.list_by_owner("alice", limit=10).items == ()


class TestJobOutcomes:
    def test_past_the_synchronous_wait_the_answer_names_the_running_job(
        self, api: ApiHarness
    ) -> None:
        """A 504 with the job's URL, marked not to be retried; the job goes on."""
        api.services.settings.sync_wait_max_s = 0.1
        with pytest.raises(openai.InternalServerError) as still:
            openai_client(api, max_retries=2).images.generate(prompt="a slow fox")
        error = still.value
        assert (error.status_code, error.code) == (504, "job_still_running")
        assert error.response.headers["x-should-retry"] == "false"
        job_url = error.response.headers["location"]
        assert job_url in error.message
        [job] = api.services.jobs.list_by_owner("alice", limit=10).items  # not retried
        assert job_url.endswith(f"/v1/jobs/{job.id}") and job.status == JobStatus.QUEUED
        assert api.client.get(job_url, headers=api.headers()).json()["status"] == "queued"

    def test_a_failed_job_is_a_500_that_is_not_retried(self, api: ApiHarness) -> None:
        """The SDK would retry a 500 twice, each a new job: x-should-retry says no."""
        api.generator.fail_with = GenerationError("prompt_rejected", "no", retryable=False)
        with running_worker(api), pytest.raises(openai.InternalServerError) as failed:
            openai_client(api, max_retries=2).images.generate(prompt="a fox")
        assert (failed.value.status_code, failed.value.code) == (500, "job_failed")
        assert "prompt_rejected" in failed.value.message
        assert len(api.services.jobs.list_by_owner("alice", limit=10).items) == 1

    def test_a_job_canceled_while_the_call_waits_is_a_409(self, api: ApiHarness) -> None:
        """Canceled natively (DELETE /v1/jobs/{id}) while held: a conflict, not retried."""
        import threading

        from dal.memory import MemoryJobQueue

        queue = api.services.queue
        assert isinstance(queue, MemoryJobQueue)
        stop = threading.Event()

        def cancel_what_arrives() -> None:
            while not stop.wait(0.01):
                for job_id in queue.take_all():
                    api.client.delete(f"/v1/jobs/{job_id}", headers=api.headers())

        canceler = threading.Thread(target=cancel_what_arrives, daemon=True)
        canceler.start()
        try:
            with pytest.raises(openai.ConflictError) as canceled:
                openai_client(api, max_retries=2).images.generate(prompt="a fox")
        finally:
            stop.set()
            canceler.join()
        assert canceled.value.code == "job_canceled"
        assert len(api.services.jobs.list_by_owner("alice", limit=10).items) == 1


class TestIsolation:
    def test_a_second_key_cannot_see_the_first_keys_jobs(self, api: ApiHarness) -> None:
        """Bob cannot read or list Alice's job, and her Idempotency-Key is not his."""
        key = {"Idempotency-Key": "shared-key"}
        with running_worker(api):
            alice = raw_generate(api, {"prompt": "alice's fox"}, **key)
            bob = api.client.post(
                "/v1/images/generations",
                json={"prompt": "alice's fox"},
                headers=api.headers(api.bob_key, **key),
            )
        assert alice.status_code == bob.status_code == 200
        alice_job = alice.headers["location"]
        assert bob.headers["location"] != alice_job  # a job of his own, not a replay of hers
        bob_headers = api.headers(api.bob_key)
        assert api.client.get(alice_job, headers=bob_headers).status_code == 404
        listed = api.client.get("/v1/jobs", headers=bob_headers).json()["items"]
        assert [f"http://testserver/v1/jobs/{j['id']}" for j in listed] == [bob.headers["location"]]


def test_native_routes_keep_problem_json(api: ApiHarness) -> None:
    """The dialect's error shape stays on its paths: /v1/jobs still answers problem+json."""
    response = api.client.post("/v1/jobs", content=b"x", headers=api.headers())
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
