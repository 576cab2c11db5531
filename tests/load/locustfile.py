"""The load scenario: users with their own API keys submit small jobs, poll them to the end and
download every image. Run by tests/load/runner.py in a locust subprocess (locust patches the
standard library with gevent, so nothing imports this module into pytest).

Environment (set by the runner):
  LOAD_KEYS_FILE  JSON list of API keys; users take them in turn, so keys have several users.
  LOAD_JOURNAL    JSONL file: one line per accepted job ({"id", "key", "num_images"}), the
                  runner's list of what must exist and finish, whatever locust saw.
  LOAD_SEED       seeds the choice of images per job (1 or 2), for a repeatable mix.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
POLL_INTERVAL_S = 0.2
POLL_LIMIT_S = 120.0
# Tiny and fast on the development model: the load is on the service, not the pipeline.
JOB = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}

_KEYS: list[str] = json.loads(Path(os.environ["LOAD_KEYS_FILE"]).read_text())
_JOURNAL = Path(os.environ["LOAD_JOURNAL"])
_NEXT_USER = itertools.count()
_RANDOM = random.Random(int(os.environ.get("LOAD_SEED", "5")))


class ServiceUser(HttpUser):
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.key_index = next(_NEXT_USER) % len(_KEYS)
        self.client.headers["Authorization"] = f"Bearer {_KEYS[self.key_index]}"

    @task
    def submit_poll_download(self) -> None:
        num_images = _RANDOM.choice((1, 2))
        body = {"prompt": f"load test {time.time_ns()}", "num_images": num_images, **JOB}
        with self.client.post(
            "/v1/jobs", json=body, name="POST /v1/jobs", catch_response=True
        ) as response:
            if response.status_code not in (200, 202):
                response.failure(f"submit answered {response.status_code}: {response.text[:200]}")
                return
            job_id = response.json()["id"]
            self._journal(job_id, num_images)
        job = self._poll(job_id)
        if job is None or job["status"] != "succeeded":
            return
        for image in job["images"]:
            self._download(image["url"])

    def _journal(self, job_id: str, num_images: int) -> None:
        line = {"id": job_id, "key": self.key_index, "num_images": num_images}
        with _JOURNAL.open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(line) + "\n")

    def _poll(self, job_id: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + POLL_LIMIT_S
        while time.monotonic() < deadline:
            with self.client.get(
                f"/v1/jobs/{job_id}", name="GET /v1/jobs/[id]", catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"poll answered {response.status_code}")
                    return None
                job: dict[str, Any] = response.json()
            if job["status"] in TERMINAL:
                return job
            time.sleep(POLL_INTERVAL_S)
        return None

    def _download(self, url: str) -> None:
        # The signed URL is the credential: no API key goes to the blob store.
        with self.client.get(
            url, name="GET image", headers={"Authorization": ""}, catch_response=True
        ) as response:
            if response.status_code != 200 or not response.content.startswith(PNG_MAGIC):
                response.failure(f"image answered {response.status_code}, not a PNG")
