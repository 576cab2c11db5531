"""Configures a process's logging once, at start: every record (ours, uvicorn's, Celery's,
libraries', warnings) goes through one handler in LOG_FORMAT, stamped with the trace and the
job ids in hand, with credentials redacted."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from dal.log_redaction import RedactSecretsFilter
from dal.settings import Settings
from dal.telemetry.log_format import CloudLoggingFormatter, TelemetryContextFilter, TextFormatter

# Loggers that servers configure with handlers of their own; ours must see their records.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")


def make_log_handler(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: logging.Formatter
    if settings.resolved_log_format == "json":
        formatter = CloudLoggingFormatter(settings.gcp_project)
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
    handler.addFilter(TelemetryContextFilter())
    handler.addFilter(RedactSecretsFilter())
    return handler


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Replace the root logger's handlers with ours (like basicConfig(force=True)) at
    LOG_LEVEL. Servers started afterwards must not install their own (uvicorn: log_config=None;
    Celery: a setup_logging receiver), so their records propagate here."""
    handler = make_log_handler(settings, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    logging.captureWarnings(True)
    return handler
