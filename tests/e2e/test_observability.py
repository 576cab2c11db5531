"""Logs and metrics of the emulator stack: one job's API and worker log lines are Cloud Logging
JSON in one trace, and both processes' /metrics show the series after it."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from emulators.stack import Stack

FAST = {"width": 64, "height": 64, "num_inference_steps": 2, "guidance_scale": 1.0}


def lines_naming(path: Path, job_id: str) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if job_id in line]


def wait_for_line(path: Path, job_id: str, needle: str, timeout: float = 15) -> list[str]:
    """The job's lines once one containing `needle` is there (logging trails the job store)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = lines_naming(path, job_id)
        if any(needle in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_one_jobs_log_lines_share_a_trace_and_metrics_show_the_series(stack: Stack) -> None:
    """Submit one job with a traceparent: every API and worker line naming it is JSON with
    that trace id (the worker gets it through the Pub/Sub message), and the series move."""
    trace_id = secrets.token_hex(16)
    headers = {
        "Authorization": f"Bearer {stack.api_key}",
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
    }
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as client:
        submitted = client.post("/v1/jobs", json={"prompt": "a beacon at dusk", **FAST})
        # 200 if the worker finished before the submit answered
        assert submitted.status_code in (200, 202), submitted.text
        job_id = submitted.json()["id"]
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers={"Prefer": "wait=60"}).json()
    assert job["status"] == "succeeded", job

    assert stack.api is not None and stack.worker is not None
    logs = stack.config.state_dir
    api_lines = wait_for_line(logs / f"api-{stack.api.port}.log", job_id, "submitted")
    worker_lines = wait_for_line(logs / f"worker-{stack.worker.port}.log", job_id, "push message")
    assert api_lines and worker_lines, "both processes log lines that name the job"
    expected_trace = f"projects/{stack.env['GCP_PROJECT']}/traces/{trace_id}"
    for line in api_lines + worker_lines:
        entry = json.loads(line)  # every line is one JSON object
        assert entry["severity"] in {"DEBUG", "INFO", "WARNING"}, line
        assert entry["logging.googleapis.com/trace"] == expected_trace, line
    assert any(json.loads(line).get("job_id") == job_id for line in worker_lines)
    assert any(f"job {job_id} succeeded" in line for line in worker_lines)

    worker = samples(stack.worker_url)
    assert worker[("txt2img_images_generated_total", frozenset())] >= 1
    assert worker[("txt2img_pipeline_runs_total", frozenset())] >= 1
    assert worker[("txt2img_model_load_seconds", frozenset())] > 0
    assert worker[("txt2img_job_runs_total", frozenset({("outcome", "succeeded")}))] >= 1
    assert worker[("txt2img_generation_seconds_count", frozenset())] >= 1
    assert worker[("txt2img_job_queue_wait_seconds_count", frozenset())] >= 1
    pushes = [
        value
        for (name, labels), value in worker.items()
        if name == "txt2img_http_request_duration_seconds_count"
        and ("route", "/pubsub/push") in labels
    ]
    assert sum(pushes) >= 1

    api = samples(stack.api_url)
    assert api[("txt2img_jobs_submitted_total", frozenset({("outcome", "created")}))] >= 1
    submits = frozenset({("method", "POST"), ("route", "/v1/jobs"), ("status", "202")})
    assert api[("txt2img_http_request_duration_seconds_count", submits)] >= 1
    assert ("txt2img_jobs", frozenset({("status", "queued")})) in api
