"""GET /v1/jobs/{id}/events: Server-Sent Events for a job's progress until it ends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from api.routes.events import event_id
from tests.unit.api.conftest import ALICE_KEY, ApiHarness

SLOW = {"prompt": "a slow fox", "seed": 3, "num_inference_steps": 10}


@dataclass
class Event:
    event: str
    id: int | None
    data: Any


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in fields or "data" in fields:
                eid = fields.get("id")
                yield Event(
                    event=fields.get("event", "message"),
                    id=int(eid) if eid is not None else None,
                    data=json.loads(fields["data"]) if "data" in fields else None,
                )
            fields = {}
        elif line.startswith(":"):
            continue  # a comment: keep-alive
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


class _SlowSteps(threading.Event):
    """A step gate that never blocks for long: each step takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(self.delay)
        return True


def collect(api: ApiHarness, job_id: str, **headers: str) -> tuple[Any, list[Event]]:
    with api.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=api.headers(**headers)
    ) as response:
        assert response.status_code == 200
        return response, list(parse_sse(response.iter_lines()))


def run_in_background(api: ApiHarness, job_id: str, delay: float = 0.3) -> threading.Thread:
    def worker() -> None:
        time.sleep(delay)
        api.run_pending_jobs()
        api.services.job_waits.notify(job_id)

    thread = threading.Thread(target=worker)
    thread.start()
    return thread


@pytest.fixture
def slow_api(api: ApiHarness) -> ApiHarness:
    api.services.settings.prefer_wait_poll_s = 0.05
    api.generator.step_gate = _SlowSteps(0.08)
    return api


class TestJobEvents:
    def test_progress_rises_until_the_terminal_status_event(self, slow_api: ApiHarness) -> None:
        api = slow_api
        job_id = api.client.post("/v1/jobs", json=SLOW, headers=api.headers()).json()["id"]
        thread = run_in_background(api, job_id)
        response, events = collect(api, job_id)
        thread.join()

        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        progress = [e for e in events if e.event == "progress"]
        queue = [e for e in events if e.event == "queue"]
        assert events[-1].event == "status"
        assert [e for e in events[:-1] if e.event != "queue"] == progress
        # Nothing waits in line (the default capacity): the job is next, handed over at once.
        assert [(e.data["id"], e.data["queue_position"]) for e in queue] == [(job_id, 0)]
        values = [e.data["progress"] for e in progress]
        assert values == sorted(values)
        assert len(set(values)) >= 2, values
        assert all(e.data["id"] == job_id for e in progress)
        assert {e.data["status"] for e in progress} <= {"queued", "running"}
        ids = [e.id for e in events if e.id is not None]
        assert len(ids) == len(events)
        assert ids == sorted(ids)  # never down: a queue event carries its state's id
        states = [e.id for e in events if e.event != "queue"]
        assert len(set(states)) == len(states)  # each new state a larger id
        final = events[-1].data
        assert final["status"] == "succeeded" and final["progress"] == 1.0
        assert final["images"] and final["images"][0]["url"].startswith("http")

    def test_reconnect_gets_only_newer_events(self, slow_api: ApiHarness) -> None:
        api = slow_api
        job_id = api.client.post("/v1/jobs", json=SLOW, headers=api.headers()).json()["id"]
        queued = api.services.job_service.get(owner="alice", job_id=job_id)
        thread = run_in_background(api, job_id, delay=0.5)
        _, events = collect(api, job_id, **{"Last-Event-ID": str(event_id(queued))})
        thread.join()
        # The queued state the client had already seen is not sent again; its place in line
        # is (it may have changed), with the id the client has.
        states = [e for e in events if e.event != "queue"]
        assert all(e.id is not None and e.id > event_id(queued) for e in states)
        assert "queued" not in {e.data["status"] for e in states}
        assert all(e.id == event_id(queued) for e in events if e.event == "queue")
        assert events[-1].event == "status"

    def test_finished_job_always_resends_the_terminal_event(self, api: ApiHarness) -> None:
        job_id = api.client.post("/v1/jobs", json=SLOW, headers=api.headers()).json()["id"]
        api.run_pending_jobs()
        _, first = collect(api, job_id)
        assert [e.event for e in first] == ["status"]
        terminal = first[0].id
        assert terminal is not None
        _, again = collect(api, job_id, **{"Last-Event-ID": str(terminal)})
        assert [(e.event, e.id) for e in again] == [("status", terminal)]
        assert again[0].data["status"] == "succeeded"

    def test_stream_starts_with_a_retry_hint(self, api: ApiHarness) -> None:
        job_id = api.client.post("/v1/jobs", json=SLOW, headers=api.headers()).json()["id"]
        api.run_pending_jobs()
        with api.client.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=api.headers()
        ) as response:
            lines = list(response.iter_lines())
        assert lines[0] == "retry: 2000"

    def test_stream_ends_after_its_time_limit(self, api: ApiHarness) -> None:
        """A stream is bounded; the client reconnects (here: the job never runs)."""
        api.services.settings.events_stream_max_s = 0.5
        api.services.settings.prefer_wait_poll_s = 0.05
        job_id = api.client.post("/v1/jobs", json=SLOW, headers=api.headers()).json()["id"]
        started = time.monotonic()
        _, events = collect(api, job_id)
        assert time.monotonic() - started < 5
        assert [(e.event, e.data.get("status")) for e in events] == [
            ("progress", "queued"),
            ("queue", None),
        ]

    def test_unknown_job_is_a_404_problem(self, api: ApiHarness) -> None:
        response = api.client.get("/v1/jobs/no-such-job/events", headers=api.headers())
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "not-found"

    def test_another_owners_job_is_a_404_problem(self, api: ApiHarness) -> None:
        job_id = api.client.post("/v1/jobs", json=SLOW, headers=api.headers()).json()["id"]
        response = api.client.get(f"/v1/jobs/{job_id}/events", headers=api.headers(api.bob_key))
        assert response.status_code == 404
        assert response.json()["code"] == "not-found"

    def test_needs_an_api_key(self, api: ApiHarness) -> None:
        job_id = api.client.post(
            "/v1/jobs", json=SLOW, headers={"Authorization": f"Bearer {ALICE_KEY}"}
        ).json()["id"]
        response = api.client.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 401
