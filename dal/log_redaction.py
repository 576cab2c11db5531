"""Keeps credentials out of logs: signed-URL signatures and bearer tokens are redacted from
every record, including uvicorn's access log (which logs full request paths with queries).
dal/telemetry/logging_setup.py puts the filter on the one handler every process logs through."""

from __future__ import annotations

import logging
import re

_SECRET_QUERY = re.compile(r"(?i)\b(sig|signature|x-goog-signature|token|key|api_key)=[^&\s\"']+")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    # Most lines hold neither a query nor a token: two substring tests (in C) spare them both
    # case-insensitive scans, which every log line paid twice (the filter and the formatter).
    if "=" not in text and "bearer" not in text.lower():
        return text
    return _BEARER.sub("Bearer [redacted]", _SECRET_QUERY.sub(r"\1=[redacted]", text))


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True
