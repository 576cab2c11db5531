"""Opaque paging cursors: what encode_cursor issues decode_cursor accepts, nothing else."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dal.errors import InvalidCursor
from dal.paging import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor, sort_key
from dal.records import Job, JobParams

T0 = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


def job(job_id: str, created_at: datetime = T0) -> Job:
    params = JobParams(
        prompt="p", width=64, height=64, num_inference_steps=2, guidance_scale=1.0, seed=1
    )
    return Job(id=job_id, owner="alice", params=params, model="m", created_at=created_at)


def b64(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_cursor_round_trips_created_at_and_id() -> None:
    """decode_cursor gives back the last item's created_at (microseconds included) and id."""
    cursor = encode_cursor(job("job-42"))
    assert decode_cursor(cursor) == (T0, "job-42")
    assert decode_cursor(cursor)[0].tzinfo is not None


def test_cursor_is_url_safe() -> None:
    """A cursor can go into a query string as is: no padding, '+' or '/'."""
    for i in range(50):
        cursor = encode_cursor(job(f"job-{'x' * i}", T0 + timedelta(microseconds=i)))
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_cursor_with_another_offset_decodes_to_the_same_instant_in_utc() -> None:
    """A created_at in another zone decodes to the same moment, expressed in UTC."""
    moment = T0.astimezone(timezone(timedelta(hours=5, minutes=30)))
    created_at, job_id = decode_cursor(encode_cursor(job("job-1", moment)))
    assert created_at == T0
    assert created_at.utcoffset() == timedelta(0)
    assert job_id == "job-1"


def test_sort_key_orders_by_created_at_then_id() -> None:
    """sort_key breaks created_at ties by id."""
    jobs = [job("b"), job("a"), job("c", T0 - timedelta(microseconds=1))]
    assert [j.id for j in sorted(jobs, key=sort_key)] == ["c", "a", "b"]


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("%%%%", id="not-base64"),
        pytest.param("a", id="bad-padding"),
        pytest.param("é€😀", id="non-ascii"),
        pytest.param(b64(b"\xff\xfe\xfd"), id="not-utf8"),
        pytest.param(b64("not json"), id="not-json"),
        pytest.param(b64("[]"), id="json-list"),
        pytest.param(b64("42"), id="json-number"),
        pytest.param(b64("null"), id="json-null"),
        pytest.param(b64('{"id": "job-1"}'), id="no-time"),
        pytest.param(b64('{"t": "2025-01-01T00:00:00+00:00"}'), id="no-id"),
        pytest.param(b64('{"t": 1735689600, "id": "job-1"}'), id="numeric-time"),
        pytest.param(b64('{"t": "tomorrow", "id": "job-1"}'), id="bad-time"),
        pytest.param(b64('{"t": "2025-01-01T00:00:00+00:00", "id": 1}'), id="numeric-id"),
        pytest.param(b64('{"t": "2025-01-01T00:00:00+00:00", "id": null}'), id="null-id"),
        pytest.param(b64('{"t": "0001-01-01T00:00:00+01:00", "id": "j"}'), id="before-year-1"),
        pytest.param(b64('{"t": "9999-12-31T23:59:59-01:00", "id": "j"}'), id="after-9999"),
        pytest.param(b64("[" * 5000), id="deeply-nested"),
    ],
)
def test_garbage_cursor_raises_invalid_cursor(cursor: str) -> None:
    """Anything that encode_cursor did not produce raises InvalidCursor."""
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


@pytest.mark.parametrize(
    "moment", ["2025-01-01T00:00:00", "2025-01-01T00:00:00.123456", "2025-01-01"]
)
def test_naive_datetime_cursor_raises_invalid_cursor(moment: str) -> None:
    """A cursor whose time has no zone is refused, since it cannot be ordered against UTC."""
    cursor = b64(json.dumps({"t": moment, "id": "job-1"}))
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


def test_a_cursor_longer_than_any_issued_is_refused_before_it_is_decoded() -> None:
    """The longest cursor the stores can issue (a 64-character job id) is well under the
    bound; anything over it is refused unread, however it nests."""
    longest = encode_cursor(job("j" * 64, T0 + timedelta(microseconds=123456)))
    assert len(longest) < MAX_CURSOR_LENGTH / 2
    assert decode_cursor(longest)[1] == "j" * 64
    too_long = encode_cursor(job("j" * MAX_CURSOR_LENGTH, T0))
    with pytest.raises(InvalidCursor):
        decode_cursor(too_long)
