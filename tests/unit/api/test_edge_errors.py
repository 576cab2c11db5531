"""Every bad input gets its 4xx problem+json and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.api.conftest import ApiHarness, make_settings

VALID = {"prompt": "a cat"}


def assert_problem(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == f"/problems/{code}"
    return problem


def assert_nothing_created(api: ApiHarness) -> None:
    for owner in ("alice", "bob"):
        assert api.services.jobs.list_by_owner(owner, limit=10).items == ()


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
            {"Authorization": "Bearer "},
        ],
    )
    def test_missing_or_bad_key_is_401_with_challenge(self, api: ApiHarness, headers) -> None:
        """No valid key, no access, and the response says how to authenticate."""
        response = api.client.post("/v1/jobs", json=VALID, headers=headers)
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert_nothing_created(api)

    def test_revoked_key_stops_working_at_once(self, api: ApiHarness) -> None:
        """Revocation takes effect on the next request."""
        issued = api.services.keys.issue(owner="carol")
        headers = api.headers(issued.secret)
        assert api.client.get("/v1/jobs", headers=headers).status_code == 200
        api.services.keys.revoke(issued.record.id)
        assert_problem(api.client.get("/v1/jobs", headers=headers), 401, "unauthenticated")

    def test_keys_are_stored_hashed(self, api: ApiHarness) -> None:
        """The key store never holds a key in plain text."""
        issued = api.services.keys.issue(owner="dave")
        stored = api.services.keys.list_keys("dave")[0]
        assert issued.secret not in stored.key_hash
        assert stored.key_hash != issued.secret


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body.prompt"),
            ({"prompt": ""}, "body.prompt"),
            ({"prompt": "   "}, "body.prompt"),
            ({"prompt": "x" * 1001}, "body.prompt"),
            ({"prompt": 5}, "body.prompt"),
            ({"prompt": "x", "negative_prompt": "y" * 1001}, "body.negative_prompt"),
            ({"prompt": "x", "width": 60}, "body.width"),
            ({"prompt": "x", "width": 100}, "body.width"),
            ({"prompt": "x", "height": 1032}, "body.height"),
            ({"prompt": "x", "width": "64"}, "body.width"),
            ({"prompt": "x", "width": 64.0}, "body.width"),
            ({"prompt": "x", "width": True}, "body.width"),
            ({"prompt": "x", "num_inference_steps": 0}, "body.num_inference_steps"),
            ({"prompt": "x", "num_inference_steps": 51}, "body.num_inference_steps"),
            ({"prompt": "x", "guidance_scale": -0.5}, "body.guidance_scale"),
            ({"prompt": "x", "guidance_scale": 20.5}, "body.guidance_scale"),
            ({"prompt": "x", "guidance_scale": False}, "body.guidance_scale"),
            ({"prompt": "x", "seed": -1}, "body.seed"),
            ({"prompt": "x", "seed": 2**32}, "body.seed"),
            ({"prompt": "x", "num_images": 0}, "body.num_images"),
            ({"prompt": "x", "num_images": 5}, "body.num_images"),
            ({"prompt": "x", "nsfw": True}, "body.nsfw"),
        ],
    )
    def test_invalid_body_is_422_naming_the_field(self, api: ApiHarness, body, field) -> None:
        """Each invalid field is reported by name, and no job is created."""
        response = api.client.post("/v1/jobs", json=body, headers=api.headers())
        problem = assert_problem(response, 422, "validation-error")
        assert field in [e["field"] for e in problem["errors"]]
        assert_nothing_created(api)

    def test_unknown_field_is_named_unknown(self, api: ApiHarness) -> None:
        """Unknown fields are rejected rather than ignored."""
        response = api.client.post(
            "/v1/jobs", json={"prompt": "x", "steps": 4}, headers=api.headers()
        )
        problem = assert_problem(response, 422, "validation-error")
        assert {"field": "body.steps", "message": "unknown field"} in problem["errors"]

    def test_malformed_json_is_400(self, api: ApiHarness) -> None:
        """A body that is not JSON at all is a 400, not a validation list."""
        response = api.client.post(
            "/v1/jobs",
            content=b'{"prompt": ',
            headers=api.headers(**{"Content-Type": "application/json"}),
        )
        assert_problem(response, 400, "invalid-json")
        assert_nothing_created(api)

    def test_bad_idempotency_key_header_is_422(self, api: ApiHarness) -> None:
        """An over-long Idempotency-Key is refused."""
        response = api.client.post(
            "/v1/jobs", json=VALID, headers=api.headers(**{"Idempotency-Key": "k" * 300})
        )
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["field"] == "header.Idempotency-Key"
        assert_nothing_created(api)


class TestTransportLimits:
    def test_oversized_body_is_413(self, api: ApiHarness) -> None:
        """Bodies over MAX_BODY_BYTES are refused before parsing."""
        body = b'{"prompt": "' + b"x" * 5000 + b'"}'
        response = api.client.post(
            "/v1/jobs", content=body, headers=api.headers(**{"Content-Type": "application/json"})
        )
        assert_problem(response, 413, "payload-too-large")
        assert_nothing_created(api)

    def test_oversized_chunked_body_is_413(self, api: ApiHarness) -> None:
        """A body without Content-Length is counted as it arrives."""

        def chunks():
            for _ in range(10):
                yield b"x" * 1000

        response = api.client.post(
            "/v1/jobs",
            content=chunks(),
            headers=api.headers(**{"Content-Type": "application/json"}),
        )
        assert_problem(response, 413, "payload-too-large")

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
    def test_non_json_body_is_415(self, api: ApiHarness, content_type: str) -> None:
        """Only application/json bodies are accepted."""
        response = api.client.post(
            "/v1/jobs",
            content=b'{"prompt": "x"}',
            headers=api.headers(**{"Content-Type": content_type}),
        )
        assert_problem(response, 415, "unsupported-media-type")
        assert_nothing_created(api)

    def test_json_with_charset_is_accepted(self, api: ApiHarness) -> None:
        """A charset parameter on application/json is fine."""
        response = api.client.post(
            "/v1/jobs",
            content=b'{"prompt": "x"}',
            headers=api.headers(**{"Content-Type": "application/json; charset=utf-8"}),
        )
        assert response.status_code == 202

    def test_unknown_route_and_method_are_problems(self, api: ApiHarness) -> None:
        """Even routing errors are problem documents."""
        assert_problem(api.client.get("/v2/nothing"), 404, "not-found")
        assert_problem(api.client.put("/v1/jobs", json={}), 405, "method-not-allowed")


class TestRateLimit:
    def test_submits_over_the_limit_are_429_with_retry_after(self) -> None:
        """A key over its submit budget gets 429 with Retry-After and RateLimit headers."""
        from fastapi.testclient import TestClient

        from api.app import create_app
        from api.wiring import build_services
        from tests.fakes import PatternGenerator

        settings = make_settings(rate_limit_submit_per_minute=2, rate_limit_submit_burst=2)
        services = build_services(settings, generator=PatternGenerator())
        headers = {"Authorization": "Bearer alice-test-key-0123456789"}
        with TestClient(create_app(services=services)) as client:
            ok = [client.post("/v1/jobs", json=VALID, headers=headers) for _ in range(2)]
            assert [r.status_code for r in ok] == [202, 202]
            assert ok[1].headers["ratelimit-remaining"] == "0"
            limited = client.post("/v1/jobs", json=VALID, headers=headers)
            assert_problem(limited, 429, "rate-limited")
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["ratelimit-limit"] == "2"
            # Reads have their own budget: polling still works.
            assert client.get("/v1/jobs", headers=headers).status_code == 200
        assert len(services.jobs.list_by_owner("alice", limit=10).items) == 2
        services.close()


class TestOperations:
    def test_health_and_readiness(self, api: ApiHarness) -> None:
        """healthz is always ok; readyz reports each dependency."""
        assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = api.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"job_store": "ok", "blob_store": "ok"}

    def test_openapi_has_an_example_for_every_body(self, api: ApiHarness) -> None:
        """Every request and response body schema in the contract carries an example."""
        spec = api.client.get("/openapi.json").json()
        schemas = spec["components"]["schemas"]
        for name in ("JobCreate", "JobOut", "JobListOut", "Problem"):
            assert schemas[name].get("examples"), name
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
