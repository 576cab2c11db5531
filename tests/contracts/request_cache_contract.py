"""The RequestCache contract: one set of cases that every RequestCache adapter must pass.

A test module subclasses `RequestCacheContract` (as `TestXxxRequestCache`) and provides a
`cache` fixture whose keys no other cache shares. Time moves through the `advance` fixture,
which sleeps by default (Redis expires keys on its own clock); an adapter with an injectable
clock may override it to move a manual clock instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dal.ports import RequestCache

Advance = Callable[[float], None]

VALUES = [
    "job-0001",
    "",
    "héllo wörld ✓ 画像 🖼️",
    '{"job_id": "j1", "status": "succeeded"}',
    "line one\nline two\ttab \x00 nul",
    "x" * 10_000,
]


class RequestCacheContract:
    """Cases every RequestCache adapter must pass; subclasses provide the `cache` fixture."""

    @pytest.fixture
    def advance(self) -> Advance:
        return time.sleep

    def test_get_missing_is_none(self, cache: RequestCache) -> None:
        assert cache.get("nothing-here") is None

    def test_put_if_absent_stores_once_and_returns_the_first_value(
        self, cache: RequestCache
    ) -> None:
        """The first caller stores its value and gets None; later callers get that value and
        change nothing."""
        assert cache.put_if_absent("idem", "first", ttl_s=60) is None
        assert cache.get("idem") == "first"
        assert cache.put_if_absent("idem", "second", ttl_s=60) == "first"
        assert cache.put_if_absent("idem", "third", ttl_s=60) == "first"
        assert cache.get("idem") == "first"

    def test_put_if_absent_reports_an_empty_string_as_present(self, cache: RequestCache) -> None:
        assert cache.put_if_absent("idem", "", ttl_s=60) is None
        assert cache.put_if_absent("idem", "other", ttl_s=60) == ""

    def test_put_overwrites(self, cache: RequestCache) -> None:
        cache.put("k", "one", ttl_s=60)
        cache.put("k", "two", ttl_s=60)
        assert cache.get("k") == "two"
        assert cache.put_if_absent("k", "three", ttl_s=60) == "two"

    def test_delete_removes_and_tolerates_missing_keys(self, cache: RequestCache) -> None:
        cache.put("k", "v", ttl_s=60)
        cache.delete("k")
        assert cache.get("k") is None
        cache.delete("k")
        cache.delete("never-there")
        assert cache.put_if_absent("k", "again", ttl_s=60) is None
        assert cache.get("k") == "again"

    @pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
    def test_values_round_trip(self, cache: RequestCache, value: str) -> None:
        """Values come back as the same str, unicode and control characters included."""
        cache.put("put", value, ttl_s=60)
        assert cache.put_if_absent("pia", value, ttl_s=60) is None
        for key in ("put", "pia"):
            got = cache.get(key)
            assert isinstance(got, str)
            assert got == value
        assert cache.put_if_absent("pia", "other", ttl_s=60) == value

    def test_keys_are_distinct(self, cache: RequestCache) -> None:
        keys = ["a", "A", "a:b", "a:", "ключ ✓", "owner-1:idem:42"]
        for i, key in enumerate(keys):
            cache.put(key, str(i), ttl_s=60)
        assert [cache.get(key) for key in keys] == [str(i) for i in range(len(keys))]

    # Sleeps about 1.1 s on real time: TTLs are whole seconds.
    @pytest.mark.timeout(15)
    def test_entries_expire_after_their_ttl(self, cache: RequestCache, advance: Advance) -> None:
        """An entry is gone once its TTL has passed; put resets the TTL; an expired key can be
        claimed again with put_if_absent."""
        cache.put("plain", "p", ttl_s=1)
        cache.put("renewed", "r1", ttl_s=1)
        cache.put("renewed", "r2", ttl_s=60)
        assert cache.put_if_absent("claimed", "c1", ttl_s=1) is None
        assert [cache.get(k) for k in ("plain", "renewed", "claimed")] == ["p", "r2", "c1"]

        advance(1.1)
        assert cache.get("plain") is None
        assert cache.get("renewed") == "r2"
        assert cache.get("claimed") is None
        assert cache.put_if_absent("claimed", "c2", ttl_s=60) is None
        assert cache.get("claimed") == "c2"

    def test_ping_answers(self, cache: RequestCache) -> None:
        cache.ping()
