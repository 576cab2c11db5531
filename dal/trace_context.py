"""The W3C trace context of the work in progress, carried from HTTP requests into messages and
from messages into the worker's logs."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLOUD_TRACE = re.compile(r"^([0-9a-f]{32})(?:/(\d+))?(?:;o=([01]))?$")

_current: ContextVar[str | None] = ContextVar("traceparent", default=None)


def current_traceparent() -> str | None:
    return _current.get()


def set_traceparent(value: str | None) -> None:
    _current.set(value)


def trace_id(traceparent: str | None) -> str | None:
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None


def from_headers(traceparent: str | None, cloud_trace: str | None) -> str:
    """A valid traceparent for this request: the caller's, else one derived from Cloud Run's
    X-Cloud-Trace-Context, else a new one."""
    if traceparent and _TRACEPARENT.match(traceparent.strip().lower()):
        return traceparent.strip().lower()
    if cloud_trace:
        match = _CLOUD_TRACE.match(cloud_trace.strip().lower())
        if match:
            span = int(match.group(2) or secrets.randbits(63)) & (2**64 - 1)
            flags = "01" if match.group(3) == "1" else "00"
            return f"00-{match.group(1)}-{span:016x}-{flags}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
