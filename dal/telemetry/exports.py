"""What a long-running process exports while it serves: its METRICS_PORT server (if any) and its
trace exporter, flushed and stopped at exit. One helper for the API, the push/pull worker and
the Celery worker, so none of them forgets a step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dal.settings import Settings
from dal.telemetry.metrics_endpoint import start_configured_metrics_server
from dal.telemetry.tracing import shutdown_tracing


@contextmanager
def exporting_telemetry(
    settings: Settings, host: str, *, default_port: int | None = None
) -> Iterator[None]:
    """Serve METRICS_PORT (unset: `default_port`; none: no server) while the block runs; at
    its end close that server and flush the spans still buffered."""
    metrics_server = start_configured_metrics_server(settings, host, default_port=default_port)
    try:
        yield
    finally:
        if metrics_server is not None:
            metrics_server.close()
        shutdown_tracing()
