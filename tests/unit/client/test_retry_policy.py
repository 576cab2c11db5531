"""When the client sends a request again, and how long it waits first."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from txt2img_client import RetryPolicy
from txt2img_client._retry import is_retry_safe, retry_after_s

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def answer(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(status, headers=headers)


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("7", 7.0),
            (" 0 ", 0.0),
            ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
            ("Fri, 27 Nov 2026 11:59:00 GMT", 0.0),  # past: at once
            ("Fri, 27 Nov 2026 12:01:00 -0000", 60.0),
            (None, None),
            ("soon", None),
            ("-5", None),
            ("1.5", None),
        ],
    )
    def test_seconds_or_an_http_date(self, value: str | None, seconds: float | None) -> None:
        assert retry_after_s(value, now=NOW) == seconds


class TestRetrySafety:
    @pytest.mark.parametrize("method", ["GET", "DELETE"])
    def test_reads_and_the_cancel_are_safe(self, method: str) -> None:
        assert is_retry_safe(httpx.Request(method, "https://x/v1/jobs/1"))

    def test_a_submit_is_safe_only_with_an_idempotency_key(self) -> None:
        plain = httpx.Request("POST", "https://x/v1/jobs", json={"prompt": "x"})
        keyed = httpx.Request(
            "POST", "https://x/v1/jobs", json={"prompt": "x"}, headers={"Idempotency-Key": "k"}
        )
        assert (is_retry_safe(plain), is_retry_safe(keyed)) == (False, True)


class TestRetryPolicy:
    def test_retry_after_is_honoured_on_429_and_503(self) -> None:
        policy = RetryPolicy()
        for status in (429, 503):
            delay = policy.delay(attempt=1, waited_s=0, response=answer(status, "3"), now=NOW)
            assert delay == 3.0

    def test_without_retry_after_the_backoff_doubles_with_equal_jitter(self) -> None:
        low = RetryPolicy(backoff_base_s=1, backoff_max_s=5, jitter=lambda: 0.0)
        high = RetryPolicy(backoff_base_s=1, backoff_max_s=5, jitter=lambda: 0.999999)
        assert [low.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
        assert [round(high.backoff(n), 3) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
        assert low.delay(attempt=2, waited_s=0, response=answer(503)) == 1.0
        assert low.delay(attempt=2, waited_s=0, response=None) == 1.0  # no answer at all

    def test_other_answers_are_final(self) -> None:
        policy = RetryPolicy()
        for status in (400, 401, 404, 409, 422, 500, 502):
            assert policy.delay(attempt=1, waited_s=0, response=answer(status)) is None

    def test_gives_up_after_max_attempts(self) -> None:
        policy = RetryPolicy(max_attempts=3)
        assert policy.delay(attempt=2, waited_s=0, response=answer(429, "0")) == 0.0
        assert policy.delay(attempt=3, waited_s=0, response=answer(429, "0")) is None

    def test_gives_up_when_the_wait_would_pass_the_budget(self) -> None:
        """A daily quota's Retry-After of hours is not slept through."""
        policy = RetryPolicy(max_wait_s=60)
        assert policy.delay(attempt=1, waited_s=0, response=answer(429, "43200")) is None
        assert policy.delay(attempt=1, waited_s=50, response=answer(429, "10")) == 10.0
        assert policy.delay(attempt=1, waited_s=50, response=answer(429, "11")) is None

    def test_one_attempt_never_retries(self) -> None:
        assert RetryPolicy(max_attempts=1).delay(attempt=1, waited_s=0, response=None) is None

    @pytest.mark.parametrize(
        "kwargs",
        [{"max_attempts": 0}, {"max_wait_s": -1}, {"backoff_base_s": 2, "backoff_max_s": 1}],
    )
    def test_nonsense_is_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]
