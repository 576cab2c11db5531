"""Webhooks from the real service process (embedded profile, tiny diffusers model) to a
receiver in this test that verifies every signature and answers 500 once, then 200."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dal.errors import WebhookSignatureInvalid
from dal.webhooks.signing import verify
from tests.e2e.conftest import RunningService


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    answered: int


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.secret = ""
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/txt2img"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.title(): value for name, value in self.headers.items()}
        try:
            verify(self.server.secret, headers, body)
            signature_ok = True
        except WebhookSignatureInvalid:
            signature_ok = False
        with self.server.lock:
            # A bad signature is refused for good (4xx); the first good one fails (500).
            first = not any(r.signature_ok for r in self.server.received)
            status = 401 if not signature_ok else 500 if first else 200
            self.server.received.append(Received(headers, body, signature_ok, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)


class TestWebhooks:
    def test_a_finished_job_is_delivered_once_after_a_retried_500(
        self, service: RunningService, receiver: Receiver
    ) -> None:
        """The receiver verifies the signature with the owner's secret; its 500 is retried;
        the job records the failed attempt and exactly one success."""
        with service.client() as client:
            secret = client.get("/v1/webhooks/secret")
            assert secret.status_code == 200, secret.text
            receiver.secret = secret.json()["secret"]
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
        assert [(r.signature_ok, r.answered) for r in received] == [(True, 500), (True, 200)]
        assert {r.headers["Webhook-Id"] for r in received} == {f"{job_id}.job.succeeded"}
        assert {r.headers["Webhook-Event"] for r in received} == {"job.succeeded"}
        success = json.loads(received[-1].body)
        assert success["id"] == job_id and success["status"] == "succeeded"
        assert set(success) == set(final)
        assert len(success["images"]) == 1 and "sig=" in success["images"][0]["url"]
