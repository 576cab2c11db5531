"""Webhooks from the real service process (embedded profile, tiny diffusers model) to a
receiver in this test that verifies every signature with the `standardwebhooks` library and
answers 500 once, then 200."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import RunningService
from tests.webhook_receiver import Received, WebhookReceiver, running_receiver


class SignatureChecking:
    """Refuses a delivery that does not verify with the owner's secret for good (401), fails
    the first good one (500), takes the rest (200)."""

    def __init__(self) -> None:
        self.secret = ""

    def signature_ok(self, headers: dict[str, str], body: bytes) -> bool:
        # What a receiver runs: the reference library, handed the framework's title-cased names.
        try:
            Webhook(self.secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            return False
        return True

    def __call__(self, before: list[Received], headers: dict[str, str], body: bytes) -> int:
        if not self.signature_ok(headers, body):
            return 401
        return 500 if all(r.status == 401 for r in before) else 200


@pytest.fixture
def checker() -> SignatureChecking:
    return SignatureChecking()


@pytest.fixture
def receiver(checker: SignatureChecking) -> Iterator[WebhookReceiver]:
    with running_receiver(checker, path="/hooks/txt2img") as server:
        yield server


def wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)


class TestWebhooks:
    def test_a_finished_job_is_delivered_once_after_a_retried_500(
        self, service: RunningService, receiver: WebhookReceiver, checker: SignatureChecking
    ) -> None:
        """The receiver verifies the signature with the owner's secret; its 500 is retried;
        the job records the failed attempt and exactly one success."""
        with service.client() as client:
            secret = client.get("/v1/webhooks/secret")
            assert secret.status_code == 200, secret.text
            checker.secret = secret.json()["secret"]
            body = {
                "prompt": "a lighthouse at dusk",
                "seed": 21,
                "width": 64,
                "height": 64,
                "num_inference_steps": 2,
                "webhook_url": receiver.url,
            }
            created = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
            assert created.status_code in (200, 202), created.text
            job_id = created.json()["id"]
            assert created.json()["webhook"]["url"] == receiver.url

            def job() -> dict[str, Any]:
                answer: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                return answer

            wait_for(
                lambda: any(d["succeeded"] for d in job()["webhook"]["deliveries"]), timeout_s=30
            )
            final = job()

        assert final["status"] == "succeeded"
        deliveries = final["webhook"]["deliveries"]
        assert [(d["attempt"], d["status_code"], d["succeeded"]) for d in deliveries] == [
            (1, 500, False),
            (2, 200, True),
        ]
        assert {d["event"] for d in deliveries} == {"job.succeeded"}

        # Nothing more arrives once the success is recorded.
        time.sleep(1.0)
        received = list(receiver.received)
        assert [(checker.signature_ok(r.headers, r.body), r.status) for r in received] == [
            (True, 500),
            (True, 200),
        ]
        assert {r.headers["Webhook-Id"] for r in received} == {f"{job_id}.job.succeeded"}
        assert {r.headers["Webhook-Event"] for r in received} == {"job.succeeded"}
        success = json.loads(received[-1].body)
        assert success["id"] == job_id and success["status"] == "succeeded"
        assert set(success) == set(final)
        assert len(success["images"]) == 1 and "sig=" in success["images"][0]["url"]
