"""Logs, metrics and traces, shared by every process (API, push/pull worker, Celery worker).

- `configure_logging(settings)`: JSON lines in Cloud Logging's format (LOG_FORMAT=json) or text,
  with the trace and the job ids in hand (`job_context`, `set_job_ids`) on every line.
- `dal.telemetry.metrics`: the Prometheus series; `dal.telemetry.http_middleware` times
  requests (imported on its own: it needs Starlette);
  `metrics_text()` is the /metrics body; `start_metrics_server` serves it on METRICS_PORT.
- `exporting_telemetry(settings, host)`: a process's METRICS_PORT server and trace flush, around
  its serving loop.
- `configure_tracing(settings, ...)` and `span(...)`: OpenTelemetry behind OTEL_ENABLED.
"""

from dal.telemetry.collectors import GPU_MEMORY, JOBS_BY_STATUS
from dal.telemetry.exports import exporting_telemetry
from dal.telemetry.job_context import current_job_ids, job_context, set_job_ids
from dal.telemetry.logging_setup import configure_logging
from dal.telemetry.metrics_endpoint import (
    METRICS_CONTENT_TYPE,
    MetricsServer,
    metrics_text,
    scrape_allowed,
    start_configured_metrics_server,
    start_metrics_server,
)
from dal.telemetry.tracing import configure_tracing, shutdown_tracing, span

__all__ = [
    "GPU_MEMORY",
    "JOBS_BY_STATUS",
    "METRICS_CONTENT_TYPE",
    "MetricsServer",
    "configure_logging",
    "configure_tracing",
    "current_job_ids",
    "exporting_telemetry",
    "job_context",
    "metrics_text",
    "scrape_allowed",
    "set_job_ids",
    "shutdown_tracing",
    "span",
    "start_configured_metrics_server",
    "start_metrics_server",
]
