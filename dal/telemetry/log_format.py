"""Log line formats: one JSON object per line in Cloud Logging's structured format, or plain
text for a terminal. Both name the job(s) in hand and never carry credentials.

Cloud Logging reads `severity`, `message`, `time`, `logging.googleapis.com/trace`,
`.../spanId`, `.../trace_sampled` and `.../sourceLocation` from a JSON line on stdout/stderr and
files the rest under jsonPayload, so `jsonPayload.job_id="…"` finds one job's lines and the
trace field joins them to the request's trace in Cloud Trace.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from dal.log_redaction import redact
from dal.telemetry.job_context import current_job_ids
from dal.trace_context import current_traceparent

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
SOURCE_FIELD = "logging.googleapis.com/sourceLocation"

# Cloud Logging's LogSeverity names; Python's levels map onto them one to one.
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class TelemetryContextFilter(logging.Filter):
    """Stamps each record, in the thread that logs it, with the trace and the job ids in hand
    (a formatter may run later or elsewhere, where those context variables are gone)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_ids"):
            record.job_ids = current_job_ids()
        if not hasattr(record, "traceparent"):
            record.traceparent = current_traceparent()
        return True


def _trace_parts(traceparent: str | None) -> tuple[str, str, bool] | None:
    parts = (traceparent or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1], parts[2], parts[3] == "01"


def _severity(levelno: int) -> str:
    if levelno in _SEVERITY:
        return _SEVERITY[levelno]
    return "DEFAULT" if levelno < logging.DEBUG else _SEVERITY[min(levelno // 10 * 10, 50)]


class CloudLoggingFormatter(logging.Formatter):
    def __init__(self, project: str) -> None:
        super().__init__()
        self._project = project

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # A stack trace inside the message is what Error Reporting picks up.
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict[str, Any] = {
            "severity": _severity(record.levelno),
            "message": redact(message),
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "logger": record.name,
            SOURCE_FIELD: {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            },
        }
        trace = _trace_parts(getattr(record, "traceparent", None))
        if trace is not None:
            trace_id, span_id, sampled = trace
            entry[TRACE_FIELD] = f"projects/{self._project}/traces/{trace_id}"
            entry[SPAN_FIELD] = span_id
            entry[SAMPLED_FIELD] = sampled
        job_ids: tuple[str, ...] = getattr(record, "job_ids", ())
        if len(job_ids) == 1:
            entry["job_id"] = job_ids[0]
        elif job_ids:
            entry["job_ids"] = list(job_ids)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For people at a terminal (`make run`): time, level, logger, [job ids], message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job_suffix)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job_ids: tuple[str, ...] = getattr(record, "job_ids", ())
        record.job_suffix = f" [job {','.join(job_ids)}]" if job_ids else ""
        return redact(super().format(record))
