"""The AUTOMATIC1111 dialect on the in-memory services: requests shaped as A1111 clients send
them become ordinary jobs of the caller's key, and come back as A1111 answers them."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from httpx2 import Response  # what Starlette's TestClient answers with
from PIL import Image

from api.a1111_mapping import served_sampler
from dal.errors import GenerationError
from dal.records import JobStatus
from dal.settings import Settings
from tests.a1111_clients import WEBUIAPI_TXT2IMG
from tests.unit.api.conftest import ALICE_KEY, ApiHarness, make_settings
from tests.unit.api.openai_harness import running_worker

# webuiapi's body (tests/a1111_clients.py) with a prompt, a batch of two and a size that is
# not square.
WEBUIAPI_PAYLOAD: dict[str, Any] = {
    **WEBUIAPI_TXT2IMG,
    "prompt": "a lighthouse at dawn",
    "batch_size": 2,
    "steps": 3,
    "height": 72,
}
BASIC = ("webui", ALICE_KEY)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    model = tmp_path / "model"
    (model / "scheduler").mkdir(parents=True)
    (model / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerDiscreteScheduler"})
    )
    return make_settings(sync_wait_max_s=5.0, prefer_wait_poll_s=0.05, model_path=model)


def txt2img(api: ApiHarness, body: dict[str, Any], **kwargs: Any) -> Response:
    kwargs.setdefault("auth", BASIC)
    return api.client.post("/sdapi/v1/txt2img", json=body, **kwargs)


def generate(api: ApiHarness, body: dict[str, Any], **kwargs: Any) -> Response:
    with running_worker(api):
        return txt2img(api, body, **kwargs)


def pngs(answer: Response) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in answer.json()["images"]]


def info(answer: Response) -> Any:
    return json.loads(answer.json()["info"])


def native_jobs(api: ApiHarness, key: str = ALICE_KEY) -> list[Any]:
    listed = api.client.get("/v1/jobs", headers=api.headers(key))
    return list(listed.json()["items"])


class TestTxt2Img:
    def test_a_webuiapi_call_with_basic_auth_yields_a_batch_of_pngs(self, api: ApiHarness) -> None:
        """webuiapi's default payload, batch_size 2 and seed -1: two PNGs of the asked size."""
        answer = generate(api, WEBUIAPI_PAYLOAD)
        assert answer.status_code == 200, answer.text
        images = pngs(answer)
        assert [(i.format, i.size) for i in images] == [("PNG", (64, 72))] * 2
        assert answer.headers["RateLimit-Limit"]

    def test_info_is_a_json_string_with_the_seeds_and_settings(self, api: ApiHarness) -> None:
        """`info` parses; a random seed is drawn once and the batch gets consecutive seeds."""
        details = info(generate(api, WEBUIAPI_PAYLOAD))
        seed = details["seed"]
        assert 0 <= seed < 2**32
        assert details["all_seeds"] == [seed, seed + 1]
        assert details["all_prompts"] == ["a lighthouse at dawn"] * 2
        assert (details["width"], details["height"], details["steps"]) == (64, 72, 3)
        assert (details["cfg_scale"], details["batch_size"]) == (7.0, 2)
        assert details["sampler_name"] == "Euler"  # what ran, not the "Euler a" asked for
        assert details["sd_model_name"] == "pattern-test-model"
        assert len(details["job_timestamp"]) == 14
        assert len(details["infotexts"]) == 2
        assert f"Seed: {seed + 1}, Size: 64x72" in details["infotexts"][1]

    def test_the_call_is_an_ordinary_job_of_the_callers_key(self, api: ApiHarness) -> None:
        """The job is listed natively with the mapped parameters and the reported seed."""
        body = {
            "prompt": "a red bicycle",
            "negative_prompt": "blurry",
            "seed": 7,
            "steps": 4,
            "cfg_scale": 2.5,
            "width": 80,
            "height": 64,
            "batch_size": 1,
            "n_iter": 3,
        }
        details = info(generate(api, body))
        assert details["all_seeds"] == [7, 8, 9]
        [job] = native_jobs(api)
        assert job["id"] == details["job_id"]
        assert job["status"] == "succeeded"
        assert job["params"] == {
            "prompt": "a red bicycle",
            "negative_prompt": "blurry",
            "width": 80,
            "height": 64,
            "num_inference_steps": 4,
            "guidance_scale": 2.5,
            "seed": 7,
            "num_images": 3,
        }
        assert [image["seed"] for image in job["images"]] == [7, 8, 9]

    def test_parameters_echo_the_request_with_the_values_used(self, api: ApiHarness) -> None:
        """Every A1111 field is echoed; left-out sizes, steps and scale show what ran."""
        answer = generate(api, {"prompt": "x", "sampler_name": "DPM++ 2M Karras"})
        parameters = answer.json()["parameters"]
        assert parameters["sampler_name"] == "DPM++ 2M Karras"
        assert parameters["seed"] == -1
        assert (parameters["width"], parameters["height"]) == (64, 64)  # the model's size
        assert parameters["steps"] == api.services.settings.default_steps
        assert parameters["cfg_scale"] == api.services.settings.default_guidance_scale
        assert {"enable_hr", "hr_scale", "alwayson_scripts", "send_images"} <= parameters.keys()

    def test_bearer_auth_and_unknown_fields_are_accepted(self, api: ApiHarness) -> None:
        """A Bearer key works too; a field A1111 does not know is dropped, as A1111 does."""
        answer = generate(
            api, {"prompt": "x", "not_an_a1111_field": 1}, auth=None, headers=api.headers()
        )
        assert answer.status_code == 200, answer.text
        assert "not_an_a1111_field" not in answer.json()["parameters"]

    def test_send_images_false_answers_without_images(self, api: ApiHarness) -> None:
        """A1111's `send_images: false`: the job runs, `images` is empty."""
        answer = generate(api, {"prompt": "x", "send_images": False})
        assert answer.json()["images"] == []
        assert native_jobs(api)[0]["status"] == "succeeded"

    def test_the_same_idempotency_key_gives_the_same_job(self, api: ApiHarness) -> None:
        """Idempotency-Key is honoured: a retry answers with the first call's job."""
        headers = {"Idempotency-Key": "retry-1"}
        first = info(generate(api, {"prompt": "x"}, headers=headers))
        again = info(generate(api, {"prompt": "x"}, headers=headers))
        assert again["job_id"] == first["job_id"]
        assert again["all_seeds"] == first["all_seeds"]
        assert len(native_jobs(api)) == 1


class TestTxt2ImgRefusals:
    def test_values_out_of_the_native_limits_are_named_and_nothing_is_recorded(
        self, api: ApiHarness
    ) -> None:
        """A 422 in FastAPI's shape lists each field under its A1111 name."""
        body = {"prompt": " ", "width": 65, "steps": 51, "seed": -2, "batch_size": 3, "n_iter": 2}
        answer = txt2img(api, body)
        assert answer.status_code == 422
        error = answer.json()
        assert error["error"] == "RequestValidationError"
        assert error["code"] == "validation-error"
        fields = {tuple(item["loc"]): item["msg"] for item in error["detail"]}
        assert set(fields) == {
            ("body", name) for name in ("prompt", "width", "steps", "seed", "batch_size")
        }
        assert fields[("body", "width")] == "must be a multiple of 8"
        assert fields[("body", "batch_size")].startswith("batch_size * n_iter is 6")
        assert fields[("body", "seed")].startswith("-1 for a random seed")
        assert native_jobs(api) == []

    def test_features_this_service_lacks_are_refused_while_on(self, api: ApiHarness) -> None:
        """Hires fix, scripts, another checkpoint: 422, never silently dropped."""
        body = {
            "prompt": "x",
            "enable_hr": True,
            "alwayson_scripts": {"controlnet": {"args": []}},
            "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"},
        }
        answer = txt2img(api, body)
        assert answer.status_code == 422
        locations = [item["loc"] for item in answer.json()["detail"]]
        assert locations == [
            ["body", "enable_hr"],
            ["body", "alwayson_scripts"],
            ["body", "override_settings", "sd_model_checkpoint"],
        ]

    def test_the_served_checkpoint_may_be_named(self, api: ApiHarness) -> None:
        """`override_settings.sd_model_checkpoint` naming the served model is fine."""
        body = {"prompt": "x", "override_settings": {"sd_model_checkpoint": "pattern-test-model"}}
        assert generate(api, body).status_code == 200

    def test_a_failed_job_is_a_500_naming_it(self, api: ApiHarness) -> None:
        """The job's own error reaches the caller, with its id."""
        api.generator.fail_with = GenerationError("invalid_parameters", "no", retryable=False)
        answer = generate(api, {"prompt": "x"})
        assert answer.status_code == 500
        error = answer.json()
        assert error["job_id"] == native_jobs(api)[0]["id"]
        assert "invalid_parameters" in error["detail"]


class TestLongJobs:
    @pytest.fixture
    def settings(self) -> Settings:
        return make_settings(sync_wait_max_s=0.2, prefer_wait_poll_s=0.05)

    def test_a_job_past_the_synchronous_wait_is_named_in_a_504(self, api: ApiHarness) -> None:
        """No worker: the answer names the job (body and Location), which keeps its place."""
        answer = txt2img(api, {"prompt": "x"})
        assert answer.status_code == 504
        error = answer.json()
        assert error["code"] == "job-still-running"
        assert answer.headers["Location"].endswith(f"/v1/jobs/{error['job_id']}")
        assert native_jobs(api)[0]["status"] == "queued"


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Basic " + base64.b64encode(b"webui:wrong-key").decode()},
            {"Authorization": "Basic !!not-base64"},
            {"Authorization": "Bearer wrong-key"},
        ],
    )
    def test_no_valid_key_is_a_401_with_a_basic_challenge(
        self, api: ApiHarness, headers: dict[str, str]
    ) -> None:
        """A1111 clients answer the Basic challenge; the body has A1111's error keys."""
        answer = api.client.post("/sdapi/v1/txt2img", json={"prompt": "x"}, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="txt2img"'
        assert {"error", "detail", "body", "errors"} <= answer.json().keys()
        assert answer.json()["code"] == "unauthenticated"

    def test_any_user_name_goes_with_the_key(self, api: ApiHarness) -> None:
        """The user name is not looked at: the password is the API key."""
        answer = api.client.get("/sdapi/v1/sd-models", auth=("", ALICE_KEY))
        assert answer.status_code == 200

    def test_rate_limits_answer_in_a1111_shape_with_retry_after(self, api: ApiHarness) -> None:
        """The native submit bucket applies; the 429 keeps Retry-After."""
        burst = api.services.settings.rate_limit_submit_burst
        answers = [api.client.post("/sdapi/v1/interrupt", auth=BASIC) for _ in range(burst + 1)]
        assert [a.status_code for a in answers] == [200] * burst + [429]
        assert answers[-1].headers["Retry-After"]
        assert answers[-1].json()["code"] == "rate-limited"


class TestAroundTxt2Img:
    def test_models_options_and_samplers_name_what_is_served(self, api: ApiHarness) -> None:
        """One checkpoint, its options, and the scheduler of the model folder."""
        [model] = api.client.get("/sdapi/v1/sd-models", auth=BASIC).json()
        assert model["title"] == model["model_name"] == "pattern-test-model"
        options = api.client.get("/sdapi/v1/options", auth=BASIC).json()
        assert options["sd_model_checkpoint"] == "pattern-test-model"
        [sampler] = api.client.get("/sdapi/v1/samplers", auth=BASIC).json()
        assert sampler["name"] == "Euler"

    @pytest.mark.parametrize(
        ("scheduler", "name"),
        [(None, "Default"), ("PNDMScheduler", "PLMS"), ("FancyNewScheduler", "FancyNewScheduler")],
    )
    def test_the_sampler_is_named_after_the_model_folders_scheduler(
        self, tmp_path: Path, scheduler: str | None, name: str
    ) -> None:
        """A1111's name where A1111 has one, else the diffusers class; Default if unreadable."""
        if scheduler is not None:
            (tmp_path / "scheduler").mkdir()
            config = json.dumps({"_class_name": scheduler})
            (tmp_path / "scheduler" / "scheduler_config.json").write_text(config)
        assert served_sampler(tmp_path).name == name

    def test_setting_the_served_checkpoint_is_a_no_op_and_others_are_refused(
        self, api: ApiHarness
    ) -> None:
        """POST /options: the served checkpoint answers null; anything else is a 422."""
        same = {"sd_model_checkpoint": "pattern-test-model"}
        answer = api.client.post("/sdapi/v1/options", json=same, auth=BASIC)
        assert (answer.status_code, answer.json()) == (200, None)
        other = {"sd_model_checkpoint": "other", "CLIP_stop_at_last_layers": 2}
        refused = api.client.post("/sdapi/v1/options", json=other, auth=BASIC)
        assert refused.status_code == 422
        assert [item["loc"][-1] for item in refused.json()["detail"]] == list(other)

    def test_option_names_that_look_like_digits_are_refused_not_a_500(
        self, api: ApiHarness
    ) -> None:
        """Found by schemathesis: "¹" passes str.isdigit() but is no int; the error's
        location keeps the client's key as it came, and index-looking ASCII keys become ints
        as FastAPI writes them."""
        odd = {"¹": {}, "7": 1, "\u00ee\u0000'": True}
        refused = api.client.post("/sdapi/v1/options", json=odd, auth=BASIC)
        assert refused.status_code == 422
        assert [item["loc"] for item in refused.json()["detail"]] == [
            ["body", "¹"],
            ["body", 7],
            ["body", "\u00ee\u0000'"],
        ]

    def test_the_routes_are_in_the_openapi_document(self, api: ApiHarness) -> None:
        """Each route is documented, its errors with A1111's error schema."""
        spec = api.client.get("/openapi.json").json()
        paths = {p for p in spec["paths"] if p.startswith("/sdapi/v1/")}
        assert paths == {
            f"/sdapi/v1/{name}"
            for name in ("txt2img", "sd-models", "options", "samplers", "progress", "interrupt")
        }
        refusal = spec["paths"]["/sdapi/v1/txt2img"]["post"]["responses"]["422"]
        schema = refusal["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/A1111ErrorOut"}


class HeldCall:
    """A txt2img call of Alice's held in the background while its job runs step by step."""

    def __init__(self, api: ApiHarness, pool: ThreadPoolExecutor) -> None:
        self.api = api
        api.generator.step_gate = threading.Event()
        self.answer: Future[Response] = pool.submit(txt2img, api, {"prompt": "slow", "steps": 5})
        self.worker = pool.submit(self._run_when_submitted)

    def _run_when_submitted(self) -> None:
        deadline = time.monotonic() + 10
        while not self.api.run_pending_jobs() and time.monotonic() < deadline:
            time.sleep(0.01)

    def job_id(self) -> str:
        self.api.generator.started.wait(timeout=10)
        return str(native_jobs(self.api)[0]["id"])

    def finish(self) -> Response:
        assert self.api.generator.step_gate is not None
        self.api.generator.step_gate.set()
        self.worker.result(timeout=10)
        return self.answer.result(timeout=10)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


class TestProgressAndInterrupt:
    def test_progress_reports_the_callers_running_job(
        self, api: ApiHarness, pool: ThreadPoolExecutor
    ) -> None:
        """Alice sees her held job; with nothing of hers in flight the state is idle."""
        held = HeldCall(api, pool)
        job_id = held.job_id()
        mine = api.client.get("/sdapi/v1/progress", auth=BASIC).json()
        assert mine["state"]["job"] == job_id
        assert (mine["state"]["job_count"], mine["state"]["sampling_steps"]) == (1, 5)
        assert 0 <= mine["progress"] < 1
        assert mine["current_image"] is None
        assert held.finish().status_code == 200
        idle = api.client.get("/sdapi/v1/progress", auth=BASIC).json()
        assert (idle["progress"], idle["state"]["job"], idle["state"]["job_count"]) == (0, "", 0)

    def test_a_second_key_can_neither_see_nor_interrupt_nor_fetch_the_job(
        self, api: ApiHarness, pool: ThreadPoolExecutor
    ) -> None:
        """Bob's progress is idle, his interrupt stops nothing, Alice's job is a 404 to him."""
        held = HeldCall(api, pool)
        job_id = held.job_id()
        bob = ("bob", api.bob_key)
        assert api.client.get("/sdapi/v1/progress", auth=bob).json()["state"]["job"] == ""
        assert api.client.post("/sdapi/v1/interrupt", auth=bob).json() == {}
        assert (
            api.client.get(f"/v1/jobs/{job_id}", headers=api.headers(api.bob_key)).status_code
            == 404
        )
        assert held.finish().status_code == 200
        assert api.services.jobs.get(job_id).status == JobStatus.SUCCEEDED

    def test_interrupt_cancels_the_callers_held_job_which_answers_without_images(
        self, api: ApiHarness, pool: ThreadPoolExecutor
    ) -> None:
        """As after an A1111 interrupt, the held call returns: no images, info still parses."""
        held = HeldCall(api, pool)
        job_id = held.job_id()
        assert api.client.post("/sdapi/v1/interrupt", auth=BASIC).json() == {}
        answer = held.finish()
        assert answer.status_code == 200
        assert answer.json()["images"] == []
        assert info(answer)["job_id"] == job_id
        assert api.services.jobs.get(job_id).status == JobStatus.CANCELED

    def test_interrupt_leaves_native_jobs_alone(self, api: ApiHarness) -> None:
        """Only jobs of A1111 calls are interrupted, never one submitted on /v1/jobs."""
        native = api.client.post("/v1/jobs", json={"prompt": "x"}, headers=api.headers())
        assert api.client.post("/sdapi/v1/interrupt", auth=BASIC).status_code == 200
        assert api.services.jobs.get(native.json()["id"]).status == JobStatus.QUEUED
