"""Server-Sent Events against the real service process and the tiny diffusers model."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import RunningService


def read_events(service: RunningService, job_id: str) -> list[tuple[str, int, Any]]:
    events: list[tuple[str, int, Any]] = []
    fields: dict[str, str] = {}
    with (
        service.client() as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "event" in fields:
                    data = json.loads(fields["data"])
                    events.append((fields["event"], int(fields["id"]), data))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return events


class TestJobEvents:
    def test_client_sees_rising_progress_then_the_terminal_event(
        self, service: RunningService
    ) -> None:
        body = {
            "prompt": "a lighthouse at dusk",
            "seed": 11,
            "width": 128,
            "height": 128,
            "num_inference_steps": 20,
            "guidance_scale": 7.5,
        }
        with service.client() as client:
            created = client.post("/v1/jobs", json=body)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]

        events = read_events(service, job_id)

        kinds = [kind for kind, _, _ in events]
        # `queue`: its place in line, while it waits for the GPUs.
        assert kinds[-1] == "status" and set(kinds[:-1]) <= {"progress", "queue"}
        progress = [data["progress"] for kind, _, data in events if kind == "progress"]
        assert progress == sorted(progress)
        assert len(set(progress)) >= 2, progress
        ids = [eid for _, eid, _ in events]
        assert ids == sorted(ids)  # never down: a queue event carries its state's id
        states = [eid for kind, eid, _ in events if kind != "queue"]
        assert len(set(states)) == len(states)
        final = events[-1][2]
        assert final["id"] == job_id
        assert final["status"] == "succeeded"
        assert final["progress"] == 1.0
        assert len(final["images"]) == 1
