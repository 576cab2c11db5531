"""Webhooks through the API and the runner: webhook_url on submit (validated, nothing stored
when refused), the job view's `webhook`, the owner's secret, a cancel's delivery, the runner's
end-of-job hook and the admin command."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from api import admin_cli
from api.app import create_app
from api.wiring import build_services
from dal.errors import GenerationError
from dal.finisher import JobFinisher
from dal.memory import MemoryBlobStore, MemoryJobStore
from dal.records import Job, JobStatus
from dal.url_signing import HmacUrlSigner
from dal.webhooks.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, owner_secret
from gpu_worker.runner import JobRunner, RunnerConfig, RunOutcome
from tests.contracts.job_store_contract import make_job
from tests.fakes import PatternGenerator
from tests.unit.api.conftest import ApiHarness, make_settings
from tests.unit.test_webhook_dispatcher import receiver
from tests.webhook_receiver import WebhookReceiver

__all__ = ["receiver"]  # the fixture, re-exported for pytest

PROMPT = {"prompt": "a red fox in the snow", "seed": 7, "num_inference_steps": 3}


def harness(**overrides: Any) -> Iterator[ApiHarness]:
    generator = PatternGenerator()
    services = build_services(make_settings(**overrides), generator=generator)
    bob = services.keys.issue(owner="bob").secret
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        yield ApiHarness(client=client, services=services, generator=generator, bob_key=bob)
    services.close()


@pytest.fixture
def api() -> Iterator[ApiHarness]:
    yield from harness(webhook_backoff_base_s=0.02, webhook_backoff_max_s=0.05)


@pytest.fixture
def public_api() -> Iterator[ApiHarness]:
    """The production rule (https, public addresses) on in-memory adapters."""
    yield from harness(webhook_targets="public")


class TestSubmitWithWebhook:
    def test_the_url_is_stored_and_shown_with_no_deliveries_yet(self, api: ApiHarness) -> None:
        """The job view gains `webhook`; jobs without one show null."""
        url = "http://127.0.0.1:9/hook?tenant=7"
        created = api.client.post(
            "/v1/jobs", json=PROMPT | {"webhook_url": url}, headers=api.headers()
        )
        assert created.status_code == 202, created.text
        assert created.json()["webhook"] == {"url": url, "deliveries": []}
        assert api.services.jobs.get(created.json()["id"]).webhook_url == url
        plain = api.client.post("/v1/jobs", json={"prompt": "x"}, headers=api.headers())
        assert plain.json()["webhook"] is None

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("not a url", "spaces"),
            ("ftp://example.com/x", "absolute http or https URL"),
            ("https://user:pw@example.com/x", "credentials"),
            ("https://example.com/" + "x" * 2100, "2048"),
        ],
    )
    def test_a_malformed_url_is_a_422_and_stores_nothing(
        self, api: ApiHarness, url: str, message: str
    ) -> None:
        """Shape errors name the field; no job is created."""
        response = api.client.post(
            "/v1/jobs", json=PROMPT | {"webhook_url": url}, headers=api.headers()
        )
        assert response.status_code == 422
        problem = response.json()
        assert problem["code"] == "validation-error"
        assert problem["errors"][0]["field"] == "body.webhook_url"
        assert message in problem["errors"][0]["message"]
        assert api.services.jobs.list_by_owner("alice", limit=10).items == ()

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://93.184.216.34/hook", "https"),
            ("https://127.0.0.1/hook", "public address"),
            ("https://169.254.169.254/computeMetadata/v1/", "public address"),
            ("https://metadata.google.internal/", "metadata"),
        ],
    )
    def test_the_public_rule_refuses_http_and_internal_targets(
        self, public_api: ApiHarness, url: str, message: str
    ) -> None:
        """Under WEBHOOK_TARGETS=public: 422 on body.webhook_url, nothing stored."""
        response = public_api.client.post(
            "/v1/jobs", json=PROMPT | {"webhook_url": url}, headers=public_api.headers()
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "body.webhook_url"
        assert message in response.json()["detail"]
        assert public_api.services.jobs.list_by_owner("alice", limit=10).items == ()

    def test_a_seeded_request_with_a_webhook_is_not_deduplicated(self, api: ApiHarness) -> None:
        """An identical finished job exists, but a webhook needs a job of its own."""
        first = api.client.post("/v1/jobs", json=PROMPT, headers=api.headers()).json()
        api.run_pending_jobs()
        again = api.client.post(
            "/v1/jobs",
            json=PROMPT | {"webhook_url": "http://127.0.0.1:9/hook"},
            headers=api.headers(),
        )
        assert again.status_code == 202
        assert again.json()["id"] != first["id"]


class TestSecret:
    def test_each_owner_reads_their_own_secret(self, api: ApiHarness) -> None:
        """The secret is HMAC(master, owner): alice's and bob's differ; never cached."""
        master = api.services.settings.resolved_webhook_signing_secret
        alice = api.client.get("/v1/webhooks/secret", headers=api.headers())
        bob = api.client.get("/v1/webhooks/secret", headers=api.headers(api.bob_key))
        assert alice.status_code == 200
        assert alice.json()["secret"] == owner_secret(master, "alice")
        assert bob.json()["secret"] == owner_secret(master, "bob")
        assert alice.headers["cache-control"] == "no-store"

    def test_the_answer_spells_out_the_standard_webhooks_scheme(self, api: ApiHarness) -> None:
        """A `whsec_` + base64 secret and the scheme the libraries check, in the spec's names."""
        answer = api.client.get("/v1/webhooks/secret", headers=api.headers()).json()
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", answer["secret"])
        assert answer | {"secret": "..."} == {
            "secret": "...",
            "specification": "https://www.standardwebhooks.com",
            "algorithm": "HMAC-SHA256",
            "signed_content": f"{{{ID_HEADER}}}.{{{TIMESTAMP_HEADER}}}.{{body}}",
            "signature_header": SIGNATURE_HEADER,
            "signature_format": "v1,{base64 signature}",
        }

    def test_the_secret_needs_an_api_key(self, api: ApiHarness) -> None:
        """No key, no secret."""
        response = api.client.get("/v1/webhooks/secret")
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    def test_the_admin_command_prints_the_same_secret(
        self, api: ApiHarness, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`txt2img-admin webhooks secret --owner alice` agrees with the endpoint."""
        settings = api.services.settings
        assert admin_cli.main(["webhooks", "secret", "--owner", "alice"], settings=settings) == 0
        served = api.client.get("/v1/webhooks/secret", headers=api.headers()).json()["secret"]
        assert capsys.readouterr().out.strip() == served


class TestCancelDelivers:
    def test_a_cancel_is_delivered_with_a_retry_and_shown_on_the_job(
        self, api: ApiHarness, receiver: WebhookReceiver
    ) -> None:
        """The receiver answers 500, then 204: the job shows both, one of them a success."""
        created = api.client.post(
            "/v1/jobs", json=PROMPT | {"webhook_url": receiver.url}, headers=api.headers()
        ).json()
        canceled = api.client.delete(f"/v1/jobs/{created['id']}", headers=api.headers())
        assert canceled.status_code == 200

        deadline = time.monotonic() + 10
        job = created
        while time.monotonic() < deadline and len(job["webhook"]["deliveries"]) < 2:
            time.sleep(0.02)
            job = api.client.get(f"/v1/jobs/{created['id']}", headers=api.headers()).json()

        deliveries = job["webhook"]["deliveries"]
        assert [(d["event"], d["status_code"], d["succeeded"]) for d in deliveries] == [
            ("job.canceled", 500, False),
            ("job.canceled", 204, True),
        ]
        headers, body = receiver.received[-1].headers, receiver.received[-1].body
        secret = api.client.get("/v1/webhooks/secret", headers=api.headers()).json()["secret"]
        # As a receiver would, with the reference library and the names title-cased.
        assert Webhook(secret).verify(body, headers)["status"] == "canceled"
        assert headers["Webhook-Id"] == f"{created['id']}.job.canceled"


class TestRunnerHook:
    @pytest.fixture
    def runner_parts(self) -> tuple[MemoryJobStore, PatternGenerator, list[str]]:
        return MemoryJobStore(), PatternGenerator(), []

    def runner(
        self, jobs: MemoryJobStore, generator: PatternGenerator, told: list[str]
    ) -> JobRunner:
        finisher = JobFinisher(jobs)
        finisher.add_handler("tell", lambda job: told.append(job.id))
        return JobRunner(
            jobs=jobs,
            blobs=MemoryBlobStore(HmacUrlSigner("secret")),
            generator=generator,
            finisher=finisher,
            config=RunnerConfig(progress_write_interval_s=0, cancel_check_interval_s=0),
        )

    def test_the_runner_tells_of_succeeded_and_failed_jobs(
        self, runner_parts: tuple[MemoryJobStore, PatternGenerator, list[str]]
    ) -> None:
        """Each end the runner causes is told once; a duplicate delivery is not."""
        jobs, generator, told = runner_parts
        runner = self.runner(jobs, generator, told)
        for job_id in ("ok", "broken"):
            jobs.create(make_job(job_id))

        assert runner.run("ok") == RunOutcome.SUCCEEDED
        assert runner.run("ok") == RunOutcome.DUPLICATE
        generator.fail_with = GenerationError("prompt_rejected", "no", retryable=False)
        assert runner.run("broken") == RunOutcome.FAILED
        assert runner.run("broken") == RunOutcome.DUPLICATE

        assert told == ["ok", "broken"]
        assert jobs.get("broken").status == JobStatus.FAILED

    def test_a_failing_hook_never_changes_the_outcome(
        self, runner_parts: tuple[MemoryJobStore, PatternGenerator, list[str]]
    ) -> None:
        """The job's end and the queue's answer do not depend on the notification."""
        jobs, generator, _ = runner_parts

        def explode(job: Job) -> None:
            raise RuntimeError("dispatcher is gone")

        finisher = JobFinisher(jobs)
        finisher.add_handler("explode", explode)
        runner = JobRunner(
            jobs=jobs,
            blobs=MemoryBlobStore(HmacUrlSigner("secret")),
            generator=generator,
            finisher=finisher,
            config=RunnerConfig(progress_write_interval_s=0, cancel_check_interval_s=0),
        )
        jobs.create(make_job("ok"))
        assert runner.run("ok") == RunOutcome.SUCCEEDED
        assert jobs.get("ok").status == JobStatus.SUCCEEDED
        assert jobs.get("ok").error is None
