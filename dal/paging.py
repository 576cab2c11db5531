"""Opaque paging cursors for "newest first" listings: (created_at, id) of the last item seen."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from dal.errors import InvalidCursor
from dal.records import Job

# A cursor this service issues is about 100 characters (a time and a job id, base64). Longer
# ones are refused before they are decoded: a few kilobytes of nested JSON arrays drive
# json.loads to the interpreter's recursion limit, where a finalizer the garbage collector
# happens to run fails too (an unraisable RecursionError).
MAX_CURSOR_LENGTH = 512


def encode_cursor(last: Job) -> str:
    raw = json.dumps({"t": last.created_at.isoformat(), "id": last.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is not one this service issued")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = datetime.fromisoformat(data["t"])
        job_id = data["id"]
    # UnicodeDecodeError is a ValueError; RecursionError comes from deeply nested JSON, which a
    # client can send in a few kilobytes.
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc
    if created_at.tzinfo is None or not isinstance(job_id, str):
        raise InvalidCursor("cursor is not one this service issued")
    try:
        # In UTC, as stored; an offset that pushes it past year 1 or 9999 cannot be compared.
        created_at = created_at.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc
    return created_at, job_id


def sort_key(job: Job) -> tuple[datetime, str]:
    return job.created_at, job.id
