"""Webhook signatures: per-owner secrets, HMAC over timestamp and body, a max-age check, and
the verification example in docs/api.md doing the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dal.errors import WebhookSignatureInvalid
from dal.webhooks.signing import owner_secret, sign, signed_headers, verify

ROOT = Path(__file__).resolve().parents[2]
SECRET = owner_secret("master-secret-for-tests-0123456789", "alice")
BODY = b'{"id":"job-1","status":"succeeded"}'
NOW = 1_790_000_000


def headers(secret: str = SECRET, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    return signed_headers(secret, message_id="job-1.job.succeeded", timestamp=timestamp, body=body)


class TestOwnerSecrets:
    def test_each_owner_has_a_stable_secret_of_their_own(self) -> None:
        """Derived, so the same master and owner always give the same secret."""
        master = "master-secret-for-tests-0123456789"
        assert owner_secret(master, "alice") == SECRET
        assert owner_secret(master, "bob") != SECRET
        assert owner_secret("another-master-secret-0123456789", "alice") != SECRET
        assert re.fullmatch(r"whsec_[0-9a-f]{64}", SECRET)

    def test_an_empty_master_secret_is_refused(self) -> None:
        """No signing with an empty key."""
        with pytest.raises(ValueError):
            owner_secret("", "alice")


class TestVerify:
    def test_a_fresh_signature_verifies(self) -> None:
        """What signed_headers produces, verify accepts."""
        signed = headers()
        assert signed["Webhook-Signature"] == sign(SECRET, NOW, BODY)
        assert signed["Webhook-Signature"].startswith("v1=")
        verify(SECRET, signed, BODY, now=NOW + 10)

    @pytest.mark.parametrize(
        ("secret", "body", "now", "reason"),
        [
            (owner_secret("master-secret-for-tests-0123456789", "bob"), BODY, NOW, "matches"),
            (SECRET, BODY + b" ", NOW, "matches"),
            (SECRET, BODY, NOW + 301, "age"),
            (SECRET, BODY, NOW - 301, "age"),
        ],
        ids=["another-owners-secret", "altered-body", "too-old", "from-the-future"],
    )
    def test_wrong_secret_altered_body_or_stale_timestamp_is_refused(
        self, secret: str, body: bytes, now: int, reason: str
    ) -> None:
        """Another owner's secret cannot verify, nor can an altered or replayed body."""
        with pytest.raises(WebhookSignatureInvalid, match=reason):
            verify(secret, headers(), body, now=now)

    def test_a_changed_timestamp_breaks_the_signature(self) -> None:
        """The timestamp is signed: moving it forward to pass the age check fails."""
        replayed = headers() | {"Webhook-Timestamp": str(NOW + 1000)}
        with pytest.raises(WebhookSignatureInvalid, match="matches"):
            verify(SECRET, replayed, BODY, now=NOW + 1000)

    @pytest.mark.parametrize(
        "broken",
        [
            {"Webhook-Signature": ""},
            {"Webhook-Timestamp": ""},
            {"Webhook-Timestamp": "yesterday"},
            {"Webhook-Signature": "v1=00"},
            {"Webhook-Signature": "v1=\u00e9t\u00e9"},
        ],
    )
    def test_missing_or_malformed_headers_are_refused(self, broken: dict[str, str]) -> None:
        """Nothing verifies without both headers well formed."""
        with pytest.raises(WebhookSignatureInvalid):
            verify(SECRET, headers() | broken, BODY, now=NOW)

    def test_any_of_several_signatures_may_match(self) -> None:
        """Space-separated signatures (as during a secret rotation): one match is enough."""
        signed = headers()
        signed["Webhook-Signature"] = f"v1={'0' * 64} {signed['Webhook-Signature']}"
        verify(SECRET, signed, BODY, now=NOW)


def docs_verification_example() -> str:
    api_doc = (ROOT / "docs" / "api.md").read_text()
    section = api_doc.split("### Verifying a delivery", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


class TestDocsExample:
    def test_the_docs_example_accepts_what_the_service_signs(self) -> None:
        """docs/api.md's verify() accepts a real signature and refuses an altered body."""
        namespace: dict[str, Any] = {}
        exec(compile(docs_verification_example(), "docs/api.md", "exec"), namespace)  # noqa: S102
        docs_verify = namespace["verify"]
        signed = headers(timestamp=NOW)
        assert docs_verify(SECRET, signed, BODY, now=NOW + 5) is True
        assert docs_verify(SECRET, signed, BODY + b"x", now=NOW + 5) is False
        assert docs_verify(SECRET, signed, BODY, now=NOW + 3600) is False
        forged = signed | {"Webhook-Signature": "v1=\u00e9t\u00e9"}
        assert docs_verify(SECRET, forged, BODY, now=NOW + 5) is False
