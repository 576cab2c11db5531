"""exporting_telemetry: the METRICS_PORT server a process runs while it serves (the Celery
worker's only /metrics), over real loopback HTTP."""

from __future__ import annotations

import httpx
import pytest

from dal.settings import Settings
from dal.telemetry import exporting_telemetry
from emulators.process import free_port


def test_serves_metrics_while_the_block_runs_and_stops_after() -> None:
    port = free_port()
    with exporting_telemetry(Settings(app_env="test"), "127.0.0.1", default_port=port):
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert "txt2img_images_generated_total" in response.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_port_zero_starts_no_server() -> None:
    """METRICS_PORT=0 overrides the process's default port: nothing listens there."""
    port = free_port()
    with (
        exporting_telemetry(
            Settings(app_env="test", metrics_port=0), "127.0.0.1", default_port=port
        ),
        pytest.raises(httpx.TransportError),
    ):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
