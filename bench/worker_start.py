"""The worker's cold start as `make bench` and `make bench-weights` both measure it: seconds
from starting `python -m gpu_worker` to its /readyz answering 200 (model loaded and warmed)."""

from __future__ import annotations

import subprocess  # nosec B404 # runs our own module with fixed arguments (B603)
import sys
import time
from pathlib import Path

from emulators.process import http_ready, wait_until

REPO = Path(__file__).resolve().parents[1]


def worker_start_to_ready_s(env: dict[str, str], *, timeout_s: float = 600) -> float:
    """Start the worker with `env` (which names its WORKER_PORT and MODEL_PATH) and time it to
    ready; raises RuntimeError when it exits first."""
    url = f"http://127.0.0.1:{env['WORKER_PORT']}"
    began = time.perf_counter()
    worker = subprocess.Popen(  # nosec B603 # our own module, fixed arguments
        [sys.executable, "-m", "gpu_worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: worker.poll() is not None or http_ready(url),
            timeout=timeout_s,
            what="the worker",
            interval=0.05,
        )
        if worker.returncode is not None:
            raise RuntimeError(
                f"the worker on {env.get('MODEL_PATH')} exited with {worker.returncode}"
            )
        return time.perf_counter() - began
    finally:
        worker.terminate()
        worker.wait(timeout=30)
