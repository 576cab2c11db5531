"""The API process dies right after recording a job, before publishing it (issue 5): the job
is left `queued` with no message, and a fresh API process's outbox sweeper publishes it; the
job then runs exactly once. Without the sweeper nothing ever publishes it and this fails."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from emulators.process import free_port, stop_service
from emulators.stack import REPO_ROOT, Stack, _start_app
from tests.e2e.test_emulator_stack import FAST, admin, wait_for


def _firestore_jobs(stack: Stack, owner: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", stack.env["FIRESTORE_EMULATOR_HOST"])
    collection = firestore.Client(project=stack.env["GCP_PROJECT"]).collection(
        f"{stack.env['FIRESTORE_COLLECTION_PREFIX']}jobs"
    )
    return list(collection.where(filter=firestore.FieldFilter("owner", "==", owner)).stream())


def _image_blobs(stack: Stack, job_id: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", stack.env["STORAGE_EMULATOR_HOST"])
    bucket = storage.Client(project=stack.env["GCP_PROJECT"]).bucket(stack.env["GCS_BUCKET"])
    return [b.name for b in bucket.list_blobs(prefix="images/") if f"/{job_id}/" in b.name]


def _exit_status(pid: int, timeout: float = 20) -> int | None:
    """The exit status of our child `pid`, or None if something else reaped it first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not exit")


def submit_through_a_dying_api(
    stack: Stack, failpoint: str, auth: dict[str, str], prompt: str
) -> None:
    """Submit a 2-image job through an API of its own armed with FAILPOINTS=<failpoint>=exit
    (its own sweeper off): the request breaks, and the process dies at that point."""
    state_dir = stack.config.state_dir
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dying_env = {
        **stack.env,
        "PORT": str(port),
        "FAILPOINTS": f"{failpoint}=exit",
        "OUTBOX_SWEEP_INTERVAL_S": "0",
    }
    dying = _start_app("api-failpoint", "api", url, dying_env, state_dir)
    try:
        with pytest.raises(httpx.TransportError):
            httpx.post(
                f"{url}/v1/jobs",
                json={"prompt": prompt, "num_images": 2, **FAST},
                headers=auth,
                timeout=30,
            )
        assert dying.pid is not None
        assert _exit_status(dying.pid) in (137, None)
        exited = f"failpoint {failpoint}: exiting with status 137"
        assert exited in (state_dir / f"api-failpoint-{port}.log").read_text()
    finally:
        stop_service(dying)


def test_api_killed_after_recording_a_job_is_swept_and_runs_exactly_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = f"outbox-{secrets.token_hex(4)}"
    key = admin(stack, "keys", "create", "--owner", owner).strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}
    state_dir = stack.config.state_dir

    # 1. An API armed to die between recording and publishing; its own sweeper is off.
    submit_through_a_dying_api(stack, "after_job_recorded", auth, "an orphan")

    # 2. The job is recorded, queued, with no outbox marker, and nothing runs it.
    [record] = _firestore_jobs(stack, owner, monkeypatch)
    job_id = record.id
    time.sleep(1)
    data = _firestore_jobs(stack, owner, monkeypatch)[0].to_dict()
    assert (data["status"], data["enqueued_at"], data["attempts"]) == ("queued", None, 0)

    # 3. The admin command's dry run sees it and changes nothing.
    dry = admin_with(stack, {"OUTBOX_GRACE_S": "1"}, "outbox", "sweep", "--dry-run")
    assert f"would-enqueue\t{job_id}" in dry
    assert _firestore_jobs(stack, owner, monkeypatch)[0].to_dict()["enqueued_at"] is None

    # 4. A fresh API process with normal settings (a short grace, to keep the test short).
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fresh_env = {
        **stack.env,
        "PORT": str(port),
        "OUTBOX_GRACE_S": "1",
        "OUTBOX_SWEEP_INTERVAL_S": "0.5",
    }
    fresh = _start_app("api-fresh", "api", url, fresh_env, state_dir)
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as c:
            job = wait_for(c, job_id, {"succeeded", "failed", "canceled"}, timeout=30)
            listed = c.get("/v1/jobs").json()["items"]
    finally:
        stop_service(fresh)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert len(job["images"]) == 2
    assert [j["id"] for j in listed] == [job_id]
    assert _firestore_jobs(stack, owner, monkeypatch)[0].to_dict()["enqueued_at"] is not None
    # One set of images: two PNGs, not four.
    blobs = _image_blobs(stack, job_id, monkeypatch)
    assert len(blobs) == 2 and all(name.endswith(".png") for name in blobs), blobs


def admin_with(stack: Stack, env: dict[str, str], *args: str) -> str:
    """The admin command with the stack's settings and `env` on top."""
    done = subprocess.run(
        [sys.executable, "-m", "api.admin_cli", *args],
        env={**stack.env, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"admin {args} failed:\n{done.stderr[-3000:]}"
    return done.stdout
