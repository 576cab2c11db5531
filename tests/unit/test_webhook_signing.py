"""Webhook signatures are Standard Webhooks': per-owner `whsec_` secrets, HMAC over id,
timestamp and body, verified by the `standardwebhooks` package exactly as a receiver would,
and the verification example in docs/api.md doing the same."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from dal.errors import WebhookSignatureInvalid
from dal.webhooks.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    owner_secret,
    signed_headers,
    verify,
)

ROOT = Path(__file__).resolve().parents[2]
MASTER = "master-secret-for-tests-0123456789"
SECRET = owner_secret(MASTER, "alice")
BODY = b'{"id":"job-1","status":"succeeded"}'
MESSAGE_ID = "0f3c9a5e1d2b4c6a8e7f9a0b1c2d3e4f.job.succeeded"


def headers(
    secret: str = SECRET, body: bytes = BODY, timestamp: int | None = None
) -> dict[str, str]:
    """A delivery signed now (or at `timestamp`), as the dispatcher signs it."""
    at = int(time.time()) if timestamp is None else timestamp
    return signed_headers(secret, message_id=MESSAGE_ID, timestamp=at, body=body)


def library_verifies(secret: str, signed: dict[str, str], body: bytes) -> bool:
    """What a receiver using the reference library decides."""
    try:
        Webhook(secret).verify(body, signed, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


class TestOwnerSecrets:
    def test_a_secret_is_whsec_and_the_base64_of_a_32_byte_key_derived_per_owner(self) -> None:
        """`whsec_` + base64(HMAC-SHA256(master, owner)): the spec's form, 24 to 64 bytes."""
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", SECRET)
        key = base64.b64decode(SECRET.removeprefix("whsec_"), validate=True)
        assert key == hmac.new(MASTER.encode(), b"alice", hashlib.sha256).digest()
        assert len(key) == 32

    def test_each_owner_has_a_stable_secret_of_their_own(self) -> None:
        """Derived, so the same master and owner always give the same secret."""
        assert owner_secret(MASTER, "alice") == SECRET
        assert owner_secret(MASTER, "bob") != SECRET
        assert owner_secret("another-master-secret-0123456789", "alice") != SECRET

    def test_an_empty_master_secret_is_refused(self) -> None:
        """No signing with an empty key."""
        with pytest.raises(ValueError):
            owner_secret("", "alice")

    @pytest.mark.parametrize("secret", ["whsec_", "whsec_not*base64", ""])
    def test_signing_with_something_that_is_not_a_secret_is_refused(self, secret: str) -> None:
        """A malformed secret is a ValueError, never a signature made with a mangled key."""
        with pytest.raises(ValueError, match="Standard Webhooks secret"):
            headers(secret=secret)


class TestSignedHeaders:
    def test_the_headers_are_the_specs_names_and_forms(self) -> None:
        """webhook-id, webhook-timestamp (Unix seconds), webhook-signature `v1,<base64>`."""
        signed = headers(timestamp=1_790_000_000)
        assert set(signed) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert tuple(signed) == (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
        assert signed["webhook-id"] == MESSAGE_ID
        assert signed["webhook-timestamp"] == "1790000000"
        version, signature = signed["webhook-signature"].split(",")
        assert version == "v1"
        assert len(base64.b64decode(signature, validate=True)) == 32

    def test_the_signature_is_hmac_sha256_over_id_timestamp_and_body(self) -> None:
        """Computed from the spec's text by hand, the same signature comes out."""
        signed = headers(timestamp=1_790_000_000)
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        content = f"{MESSAGE_ID}.1790000000.".encode() + BODY
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        assert signed["webhook-signature"] == f"v1,{expected}"

    def test_a_body_that_is_not_utf8_is_signed_byte_for_byte(self) -> None:
        """The bytes sent are the bytes signed, whatever they are."""
        body = b'{"prompt":"\xff"}'
        assert library_verifies(SECRET, headers(body=body), body)
        assert not library_verifies(SECRET, headers(body=body), body.replace(b"\xff", b"\xfe"))


class TestTheReferenceLibraryVerifies:
    """`standardwebhooks.Webhook(secret).verify`, what receivers run, decides each case."""

    def test_a_fresh_delivery_verifies_with_the_owners_secret(self) -> None:
        signed = headers()
        assert Webhook(SECRET).verify(BODY, signed) == {"id": "job-1", "status": "succeeded"}

    def test_title_cased_header_names_verify_too(self) -> None:
        """Frameworks hand names over as Webhook-Id; the library lowercases them."""
        signed = {name.title(): value for name, value in headers().items()}
        assert "Webhook-Signature" in signed
        assert library_verifies(SECRET, signed, BODY)

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda h, b: (h, b.replace(b"succeeded", b"failed")),
            lambda h, b: (h, b + b" "),
            lambda h, b: (h | {ID_HEADER: MESSAGE_ID.replace("succeeded", "failed")}, b),
            lambda h, b: (h | {ID_HEADER: "another-job.job.succeeded"}, b),
            # Still within the tolerance, so only the signature can refuse it.
            lambda h, b: (h | {TIMESTAMP_HEADER: str(int(h[TIMESTAMP_HEADER]) - 1)}, b),
        ],
        ids=["body-status", "body-space", "id-event", "id-job", "timestamp"],
    )
    def test_a_tampered_body_id_or_timestamp_does_not_verify(
        self, tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]
    ) -> None:
        """Each of the three signed parts is covered by the signature."""
        signed = headers()
        tampered, body = tamper(signed, BODY)
        assert library_verifies(SECRET, signed, BODY)
        assert not library_verifies(SECRET, tampered, body)
        with pytest.raises(WebhookSignatureInvalid, match="No matching signature"):
            verify(SECRET, tampered, body)

    @pytest.mark.parametrize(
        ("offset_s", "reason"),
        [(-600, "too old"), (-310, "too old"), (310, "too new"), (600, "too new")],
    )
    def test_a_timestamp_outside_the_tolerance_does_not_verify(
        self, offset_s: int, reason: str
    ) -> None:
        """Five minutes either way: a replay, or a clock far ahead, is refused though the
        signature over that timestamp is good."""
        signed = headers(timestamp=int(time.time()) + offset_s)
        assert not library_verifies(SECRET, signed, BODY)
        with pytest.raises(WebhookSignatureInvalid, match=reason):
            verify(SECRET, signed, BODY)

    def test_one_owners_secret_cannot_verify_anothers_delivery(self) -> None:
        """Bob's secret refuses what was signed for Alice, and Alice's what was signed for Bob."""
        bob = owner_secret(MASTER, "bob")
        assert not library_verifies(bob, headers(secret=SECRET), BODY)
        assert not library_verifies(SECRET, headers(secret=bob), BODY)
        assert library_verifies(bob, headers(secret=bob), BODY)


class TestVerify:
    def test_what_signed_headers_produces_verify_accepts(self) -> None:
        verify(SECRET, headers(), BODY)

    @pytest.mark.parametrize(
        "broken",
        [
            {SIGNATURE_HEADER: ""},
            {TIMESTAMP_HEADER: ""},
            {ID_HEADER: ""},
            {TIMESTAMP_HEADER: "yesterday"},
            {TIMESTAMP_HEADER: "nan"},
            {SIGNATURE_HEADER: "v1,AAAA"},
            {SIGNATURE_HEADER: "v1=\u00e9t\u00e9"},
        ],
    )
    def test_missing_or_malformed_headers_are_refused(self, broken: dict[str, str]) -> None:
        """Nothing verifies without all three headers well formed; each is one error type."""
        with pytest.raises(WebhookSignatureInvalid):
            verify(SECRET, headers() | broken, BODY)

    def test_any_of_several_signatures_may_match(self) -> None:
        """Space-separated signatures (as during a secret rotation): one match is enough."""
        signed = headers()
        other = headers(secret=owner_secret(MASTER, "bob"))[SIGNATURE_HEADER]
        signed[SIGNATURE_HEADER] = f"{other} {signed[SIGNATURE_HEADER]}"
        verify(SECRET, signed, BODY)


def docs_verification_example() -> str:
    api_doc = (ROOT / "docs" / "api.md").read_text()
    section = api_doc.split("### Verifying a delivery", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


class TestDocsExample:
    def test_the_docs_example_accepts_what_the_service_signs(self) -> None:
        """docs/api.md's verified_job() returns the job for a real delivery, None for an
        altered body, another owner's secret or a stale timestamp."""
        namespace: dict[str, Any] = {}
        exec(compile(docs_verification_example(), "docs/api.md", "exec"), namespace)  # noqa: S102
        verified_job = namespace["verified_job"]
        signed = {name.title(): value for name, value in headers().items()}
        assert verified_job(SECRET, signed, BODY) == {"id": "job-1", "status": "succeeded"}
        assert verified_job(SECRET, signed, BODY + b"x") is None
        assert verified_job(owner_secret(MASTER, "bob"), signed, BODY) is None
        stale = headers(timestamp=int(time.time()) - 3600)
        assert verified_job(SECRET, stale, BODY) is None
