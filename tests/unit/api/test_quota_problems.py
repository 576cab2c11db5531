"""Quotas at the HTTP edge: each refusal is its own 429 problem with Retry-After, the limit
and the usage, and records nothing."""

from __future__ import annotations

import pytest

from dal.quota_rules import IN_FLIGHT_RETRY_AFTER_S
from dal.settings import Settings
from tests.unit.api.conftest import ApiHarness, make_settings

FAST = {"prompt": "a quota", "width": 64, "height": 64, "num_inference_steps": 1}


@pytest.fixture
def settings() -> Settings:
    return make_settings(quota_max_in_flight=2, quota_images_per_day=5)


def job_count(api: ApiHarness, owner: str) -> int:
    return len(api.services.jobs.list_by_owner(owner, limit=100).items)


def test_jobs_in_flight_past_the_default_limit_get_quota_in_flight_exceeded(
    api: ApiHarness,
) -> None:
    for _ in range(2):
        assert api.client.post("/v1/jobs", json=FAST, headers=api.headers()).status_code == 202
    refused = api.client.post("/v1/jobs", json=FAST, headers=api.headers())
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["Retry-After"] == str(IN_FLIGHT_RETRY_AFTER_S)
    body = refused.json()
    assert body["type"] == "/problems/quota-in-flight-exceeded"
    assert body["code"] == "quota-in-flight-exceeded"
    assert (body["limit"], body["usage"]) == (2, 2)
    assert "at most 2" in body["detail"]
    assert job_count(api, "alice") == 2
    # Once they have run, there is room again.
    api.run_pending_jobs()
    assert api.client.post("/v1/jobs", json=FAST, headers=api.headers()).status_code == 202


def test_images_past_the_daily_limit_get_quota_images_per_day_exceeded(api: ApiHarness) -> None:
    assert (
        api.client.post("/v1/jobs", json={**FAST, "num_images": 4}, headers=api.headers())
    ).status_code == 202
    api.run_pending_jobs()
    refused = api.client.post("/v1/jobs", json={**FAST, "num_images": 2}, headers=api.headers())
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "quota-images-per-day-exceeded"
    assert (body["limit"], body["usage"], body["requested"]) == (5, 4, 2)
    assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    assert "00:00 UTC" in body["detail"]
    assert job_count(api, "alice") == 1
    assert (
        api.client.post("/v1/jobs", json={**FAST, "num_images": 1}, headers=api.headers())
    ).status_code == 202


def test_a_keys_overrides_replace_the_defaults(api: ApiHarness) -> None:
    """carol's key: in flight unlimited (0), one image a day."""
    key = api.services.keys.issue(owner="carol", max_in_flight=0, images_per_day=1).secret
    assert api.client.post("/v1/jobs", json=FAST, headers=api.headers(key)).status_code == 202
    refused = api.client.post("/v1/jobs", json=FAST, headers=api.headers(key))
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota-images-per-day-exceeded"
    assert refused.json()["limit"] == 1
    assert job_count(api, "carol") == 1


def test_the_openapi_problem_schema_declares_the_quota_members(api: ApiHarness) -> None:
    schema = api.client.get("/openapi.json").json()["components"]["schemas"]["Problem"]
    assert {"limit", "usage", "requested"} <= schema["properties"].keys()
