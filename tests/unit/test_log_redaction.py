"""Credentials never reach the logs."""

from __future__ import annotations

import logging

import pytest

from dal.log_redaction import RedactSecretsFilter, redact


class TestRedaction:
    def test_signed_url_signature_is_redacted(self) -> None:
        """The sig query parameter of a signed URL is replaced, the path kept."""
        line = '"GET /v1/blobs/images/ab/j/0.png?expires=1795&sig=2bc245d8 HTTP/1.1" 200'
        assert (
            redact(line)
            == '"GET /v1/blobs/images/ab/j/0.png?expires=1795&sig=[redacted] HTTP/1.1" 200'
        )

    def test_gcs_signature_and_bearer_tokens_are_redacted(self) -> None:
        """V4 signatures and Authorization values are replaced wherever they appear."""
        assert "abc123" not in redact("https://x/o?X-Goog-Signature=abc123&X-Goog-Date=1")
        assert (
            redact("Authorization: Bearer t2i_secret.Key-1") == "Authorization: Bearer [redacted]"
        )

    @pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
    def test_a_bearer_token_in_any_case_is_redacted_in_a_line_without_a_query(
        self, scheme: str
    ) -> None:
        """The shortcut for lines without a secret must not skip a token alone on its line."""
        assert redact(f"header: {scheme} t2i_secret") == "header: Bearer [redacted]"

    def test_a_line_without_secrets_is_left_as_it_is(self) -> None:
        line = "job 0123456789abcdef submitted: created"
        assert redact(line) is line

    def test_filter_rewrites_uvicorn_style_access_records(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A record with the URL in its args is logged without the signature."""
        logger = logging.getLogger("test.access")
        caplog.handler.addFilter(RedactSecretsFilter())
        with caplog.at_level(logging.INFO, logger="test.access"):
            logger.info('%s - "%s %s" %d', "127.0.0.1", "GET", "/v1/blobs/a.png?sig=deadbeef", 200)
        assert "deadbeef" not in caplog.text
        assert "sig=[redacted]" in caplog.text
