"""Every error on the OpenAI dialect's paths is OpenAI's error object with the status the SDK
maps to the right exception: validation, authentication, limits, edges and the contract."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.wiring import build_services
from tests.fakes import PatternGenerator
from tests.unit.api.conftest import ALICE_KEY, ApiHarness, make_settings
from tests.unit.api.openai_harness import openai_client

GENERATIONS = "/v1/images/generations"


def assert_openai_error(response: Any, status: int, code: str, param: str | None = None) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]
    return error


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "param", "code"),
        [
            ({"prompt": "x", "size": "1032x64"}, "size", "invalid_value"),  # over 1024
            ({"prompt": "x", "size": "100x100"}, "size", "invalid_value"),  # not a multiple of 8
            ({"prompt": "x", "size": "32x32"}, "size", "invalid_value"),  # under 64
            ({"prompt": "x", "size": "large"}, "size", "invalid_value"),
            ({"prompt": "x", "n": 0}, "n", "invalid_value"),
            ({"prompt": "x", "n": 5}, "n", "invalid_value"),  # the service's limit is 4
            ({"prompt": "x", "n": "2"}, "n", "invalid_value"),  # no type coercion
            ({"prompt": ""}, "prompt", "invalid_value"),
            ({"prompt": "x" * 1001}, "prompt", "invalid_value"),
            ({"n": 1}, "prompt", "invalid_value"),
            ({"prompt": "x", "response_format": "png"}, "response_format", "invalid_value"),
            ({"prompt": "x", "seed": 3}, "seed", "unknown_parameter"),
            ({"prompt": "x", "stream": True}, "stream", "unsupported_value"),
            ({"prompt": "x", "output_format": "jpeg"}, "output_format", "unsupported_value"),
            ({"prompt": "x", "output_format": "webp"}, "output_format", "unsupported_value"),
            ({"prompt": "x", "background": "transparent"}, "background", "unsupported_value"),
        ],
    )
    def test_bad_requests_are_400_naming_the_field(
        self, api: ApiHarness, body: dict[str, Any], param: str, code: str
    ) -> None:
        """A bad field is OpenAI's 400 invalid_request_error (never a 422); nothing is made."""
        response = api.client.post(GENERATIONS, json=body, headers=api.headers())
        error = assert_openai_error(response, 400, code, param)
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith(f"{param}: ")
        assert api.services.jobs.list_by_owner("alice", limit=10).items == ()

    def test_the_sdk_raises_bad_request(self, api: ApiHarness) -> None:
        """openai.BadRequestError, with the parameter at fault."""
        with pytest.raises(openai.BadRequestError) as bad:
            openai_client(api).images.generate(prompt="x", size="1000x1001")
        assert (bad.value.param, bad.value.code) == ("size", "invalid_value")

    def test_a_bad_idempotency_key_names_the_header(self, api: ApiHarness) -> None:
        headers = api.headers(**{"Idempotency-Key": ""})
        response = api.client.post(GENERATIONS, json={"prompt": "x"}, headers=headers)
        assert_openai_error(response, 400, "invalid_value", "Idempotency-Key")


class TestEdges:
    def test_missing_or_wrong_key_is_401_invalid_api_key(self, api: ApiHarness) -> None:
        """openai.AuthenticationError, with the Bearer challenge."""
        with pytest.raises(openai.AuthenticationError) as denied:
            openai_client(api, "not-a-key").images.generate(prompt="x")
        assert denied.value.code == "invalid_api_key"
        assert denied.value.response.headers["www-authenticate"].startswith("Bearer")
        response = api.client.get("/v1/models")
        assert_openai_error(response, 401, "invalid_api_key")

    def test_body_edges_are_openai_errors_too(self, api: ApiHarness) -> None:
        """Invalid JSON, a non-JSON body and an oversized body (the ASGI body guard)."""
        headers = api.headers(**{"Content-Type": "application/json"})
        assert_openai_error(
            api.client.post(GENERATIONS, content=b"{", headers=headers), 400, "invalid_json"
        )
        text = api.headers(**{"Content-Type": "text/plain"})
        assert_openai_error(
            api.client.post(GENERATIONS, content=b"x", headers=text), 415, "unsupported_media_type"
        )
        huge = {"prompt": "x" * 5000}
        assert_openai_error(
            api.client.post(GENERATIONS, json=huge, headers=api.headers()),
            413,
            "payload_too_large",
        )

    def test_unknown_routes_and_methods_under_the_dialect(self, api: ApiHarness) -> None:
        assert_openai_error(
            api.client.post("/v1/images/edits", json={}, headers=api.headers()), 404, "not_found"
        )
        assert_openai_error(
            api.client.get(GENERATIONS, headers=api.headers()), 405, "method_not_allowed"
        )


class TestLimits:
    def test_over_the_submit_rate_limit_is_a_rate_limit_error(self) -> None:
        """The native submit bucket: the third call is openai.RateLimitError with Retry-After."""
        settings = make_settings(
            rate_limit_submit_per_minute=1, rate_limit_submit_burst=2, sync_wait_max_s=0
        )
        services = build_services(settings, generator=PatternGenerator())
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            harness = ApiHarness(client, services, PatternGenerator(), bob_key="")
            sdk = openai_client(harness)
            for _ in range(2):  # accepted; the jobs outlast the zero-second wait
                with pytest.raises(openai.InternalServerError):
                    sdk.images.generate(prompt="x")
            with pytest.raises(openai.RateLimitError) as limited:
                sdk.images.generate(prompt="x")
        error = limited.value
        assert (error.code, error.type) == ("rate_limit_exceeded", "requests")
        assert int(error.response.headers["retry-after"]) >= 1
        assert error.response.headers["ratelimit-limit"] == "2"
        assert len(services.jobs.list_by_owner("alice", limit=10).items) == 2
        services.close()

    def test_the_daily_image_quota_is_insufficient_quota(self) -> None:
        """A quota problem keeps its Retry-After and is typed as OpenAI types quota errors."""
        settings = make_settings(quota_images_per_day=1)
        services = build_services(settings, generator=PatternGenerator())
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            response = client.post(
                GENERATIONS,
                json={"prompt": "x", "n": 2},
                headers={"Authorization": f"Bearer {ALICE_KEY}"},
            )
        error = assert_openai_error(response, 429, "quota_images_per_day_exceeded")
        assert error["type"] == "insufficient_quota"
        assert int(response.headers["retry-after"]) >= 1
        services.close()


def test_the_contract_documents_openai_errors_on_the_dialects_paths(api: ApiHarness) -> None:
    """Its routes are in /openapi.json, their errors as OpenAI's object, and no 422."""
    spec = api.client.get("/openapi.json").json()
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIErrorOut"}}}
    create = spec["paths"]["/v1/images/generations"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImageGenerationIn"
    }
    assert create["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImagesOut"
    }
    for path in ("/v1/images/generations", "/v1/models", "/v1/models/{model}"):
        for operation in spec["paths"][path].values():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert "422" not in errors
            assert errors and all(r["content"] == error_ref for r in errors.values()), path
    assert {"400", "401", "429", "504"} <= create["responses"].keys()
