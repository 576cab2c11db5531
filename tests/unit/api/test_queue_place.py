"""A queued job's place in line for the GPUs (dal.dispatcher), as `GET /v1/jobs/{id}` and its
event stream show it: one slot (DISPATCH_CAPACITY=1), job A holds it while its generator is held
at a gate, B and C wait their turn."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dal.settings import Settings
from tests.unit.api.conftest import ApiHarness, make_settings
from tests.unit.api.test_events import Event, parse_sse

BODY = {"prompt": "a fox in line", "seed": 3, "num_inference_steps": 2}


@pytest.fixture
def settings() -> Settings:
    return make_settings(dispatch_capacity=1)


@dataclass
class Line:
    api: ApiHarness
    gate: threading.Event  # set: A's generator goes on
    a: str  # handed over, running, held at the gate
    b: str  # next in line
    c: str  # behind B
    a_runs: threading.Thread

    def end_a(self) -> None:
        self.gate.set()
        self.a_runs.join(30)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.client.get(f"/v1/jobs/{job_id}", headers=self.api.headers())
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def run_the_rest(self) -> threading.Thread:
        """Play the worker for B, then C, each handed over when the one before it ends."""

        def drain() -> None:
            while self.api.run_pending_jobs():
                pass

        thread = threading.Thread(target=drain)
        thread.start()
        return thread


@pytest.fixture
def line(api: ApiHarness) -> Iterator[Line]:
    api.services.settings.prefer_wait_poll_s = 0.05
    api.services.settings.events_stream_max_s = 20  # a failing test ends, not hangs
    gate = threading.Event()
    api.generator.step_gate = gate
    ids = [
        api.client.post("/v1/jobs", json=BODY, headers=api.headers()).json()["id"] for _ in range(3)
    ]
    a_runs = threading.Thread(target=api.run_pending_jobs)  # takes A alone: the one handed over
    a_runs.start()
    try:
        assert api.generator.started.wait(5)
        a, b, c = ids
        yield Line(api, gate, a, b, c, a_runs)
    finally:
        gate.set()
        a_runs.join(30)


def stream(line: Line, job_id: str, **headers: str) -> Iterator[Event]:
    with line.api.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=line.api.headers(**headers)
    ) as response:
        assert response.status_code == 200
        yield from parse_sse(response.iter_lines())


class TestJobView:
    def test_a_waiting_job_shows_its_place_until_it_runs(self, line: Line) -> None:
        a, b, c = line.job(line.a), line.job(line.b), line.job(line.c)
        assert (a["status"], a["queue_position"], a["estimated_start_at"]) == (
            "running",
            None,
            None,
        )
        assert (b["status"], b["queue_position"]) == ("queued", 0)
        assert (c["status"], c["queue_position"]) == ("queued", 1)
        # Nothing has ended yet: no throughput to project a start from.
        assert b["estimated_start_at"] is None and c["estimated_start_at"] is None

        line.end_a()
        after_a = line.job(line.c)
        assert (after_a["status"], after_a["queue_position"]) == ("queued", 0)  # B went first
        line.run_the_rest().join(30)
        done = line.job(line.c)
        assert done["status"] == "succeeded"
        assert (done["queue_position"], done["estimated_start_at"]) == (None, None)

    def test_the_openapi_document_calls_both_fields_estimates(self, api: ApiHarness) -> None:
        job = api.client.app.openapi()["components"]["schemas"]["JobOut"]  # type: ignore[attr-defined]
        for name in ("queue_position", "estimated_start_at"):
            field = job["properties"][name]
            assert "estimate" in field["description"].lower(), name
            assert name not in job.get("required", [])  # older servers leave them out
        assert {"type": "null"} in job["properties"]["queue_position"]["anyOf"]
        assert {"type": "string", "format": "date-time"} in job["properties"]["estimated_start_at"][
            "anyOf"
        ]


class TestQueueEvents:
    def test_the_place_counts_down_then_the_job_runs_to_its_end(self, line: Line) -> None:
        events: list[Event] = []
        drain: threading.Thread | None = None
        for event in stream(line, line.c):
            events.append(event)
            if event.event != "queue":
                continue
            if event.data["queue_position"] == 1:
                line.gate.set()  # A ends: B is handed over, C is next
            elif event.data["queue_position"] == 0 and drain is None:
                drain = line.run_the_rest()
        assert drain is not None, [e.event for e in events]
        drain.join(30)

        queue = [e for e in events if e.event == "queue"]
        assert [e.data["queue_position"] for e in queue] == [1, 0]  # never up
        assert all(e.data["id"] == line.c for e in queue)
        assert queue[0].data["estimated_start_at"] is None  # nothing ended yet
        kinds = [(e.event, (e.data or {}).get("status")) for e in events]
        assert kinds[:2] == [("progress", "queued"), ("queue", None)]
        assert kinds[-1] == ("status", "succeeded")
        # Every queue event came while C was queued.
        last_queue = max(i for i, e in enumerate(events) if e.event == "queue")
        assert {e.data["status"] for e in events[:last_queue] if e.event == "progress"} == {
            "queued"
        }
        # A queue event carries the queued state's id: ids never go down.
        ids = [e.id for e in events]
        assert None not in ids and ids == sorted(ids)  # type: ignore[type-var]
        assert {e.id for e in queue} == {events[0].id}

    def test_a_reconnect_gets_the_current_place_again(self, line: Line) -> None:
        line.api.services.settings.events_stream_max_s = 0.3
        first = list(stream(line, line.c))
        assert [(e.event, e.id) for e in first] == [("progress", 0), ("queue", 0)]
        assert first[1].data["queue_position"] == 1

        again = list(stream(line, line.c, **{"Last-Event-ID": str(first[-1].id)}))
        # The queued state is not sent again; the place is, with the same id.
        assert [(e.event, e.id) for e in again] == [("queue", 0)]
        assert again[0].data["queue_position"] == 1

    def test_a_running_job_has_no_place_in_line(self, line: Line) -> None:
        line.api.services.settings.events_stream_max_s = 0.3
        events = list(stream(line, line.a))
        assert [(e.event, e.data["status"]) for e in events] == [("progress", "running")]
