"""The API's /readyz where it runs jobs itself (the inline queue): its pipeline's readiness is
one of the checks, with the reason when it fails."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from api.wiring import build_services
from dal.settings import Settings
from tests.fakes import PatternGenerator


def test_readyz_fails_with_the_pipelines_reason_and_recovers() -> None:
    generator = PatternGenerator()
    services = build_services(Settings(app_env="test", job_queue="inline"), generator=generator)
    try:
        with TestClient(create_app(services=services)) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"]["model"] == "ok"

            generator.unavailable = "the pipeline process crashed 3 times in the last 5 minutes"
            failing = client.get("/readyz")
            assert failing.status_code == 503
            assert failing.json()["checks"]["model"] == (
                "failing: GeneratorUnavailable: the pipeline process crashed 3 times in the "
                "last 5 minutes"
            )

            generator.unavailable = None
            assert client.get("/readyz").status_code == 200
    finally:
        services.close()


def test_an_api_that_runs_no_jobs_has_no_model_check() -> None:
    services = build_services(Settings(app_env="test"), generator=PatternGenerator())
    try:
        with TestClient(create_app(services=services)) as client:
            assert "model" not in client.get("/readyz").json()["checks"]
    finally:
        services.close()
