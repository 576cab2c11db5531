"""The real service process (`python -m api`, embedded profile) on a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BOOTSTRAP_KEY = "e2e-bootstrap-key-0123456789"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningService:
    base_url: str
    data_dir: Path
    env: dict[str, str]

    def client(self, key: str = BOOTSTRAP_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def admin(self, *args: str) -> str:
        """Run the admin command against the service's own database; returns its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "api.admin_cli", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_service(
    tiny_model_dir: Path, data_dir: Path, **settings: str
) -> Iterator[RunningService]:
    """`python -m api` on the embedded profile with the tiny model, `settings` overriding the
    test defaults (e.g. EVENTS_STREAM_MAX_S="1"); stopped on leaving."""
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "local",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "MODEL_PATH": str(tiny_model_dir),
        "BOOTSTRAP_API_KEY": BOOTSTRAP_KEY,
        "PROGRESS_WRITE_INTERVAL_S": "0.05",
        "CANCEL_CHECK_INTERVAL_S": "0.05",
        "LOG_LEVEL": "info",
        # Off by default; on here so that the redaction check reads uvicorn's access lines.
        "ACCESS_LOG": "true",
        # Many tests share the bootstrap key; the limiter has tests of its own.
        "RATE_LIMIT_SUBMIT_BURST": "500",
        "RATE_LIMIT_SUBMIT_PER_MINUTE": "600",
        "TRANSFORMERS_VERBOSITY": "error",
        **settings,
    }
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base_url, process, log_path)
            yield RunningService(base_url=base_url, data_dir=data_dir, env=env)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def service(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    with running_service(tiny_model_dir, tmp_path_factory.mktemp("service-data")) as running:
        yield running


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"service not ready in time:\n{log_path.read_text()[-4000:]}")
