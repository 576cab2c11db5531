"""The signed blob URL's wire format: what a URL issued by one process (or release) must keep
meaning to the next one that verifies it."""

from __future__ import annotations

import hashlib
import hmac
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from dal.url_signing import HmacUrlSigner

SECRET = "a-url-signing-secret-of-some-length"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def signer() -> HmacUrlSigner:
    return HmacUrlSigner(SECRET, base_url="https://api.example.com", clock=lambda: NOW)


def test_the_signature_is_hmac_sha256_of_method_key_and_expiry() -> None:
    """Computed here with the standard library alone: a URL signed before an upgrade still
    verifies after it, whatever the signer's internals became."""
    key = "images/0123456789abcdef/job-1/0.png"
    signed = signer().sign(key, expires_in=timedelta(minutes=15))
    query = parse_qs(urlsplit(signed.url).query)
    expires = int(query["expires"][0])
    assert expires == int((NOW + timedelta(minutes=15)).timestamp())
    message = f"GET\n{key}\n{expires}".encode()
    assert query["sig"] == [hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()]
    signer().verify(key, expires=expires, sig=query["sig"][0])


def test_threads_signing_at_once_each_get_their_own_keys_signature() -> None:
    """One keyed MAC serves every request thread: none sees another's message."""
    shared = signer()
    keys = [f"images/0123456789abcdef/job-{i}/0.png" for i in range(400)]

    def sign(key: str) -> str:
        return shared.sign(key, expires_in=timedelta(minutes=15)).url

    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(sign, keys))
    assert together == [signer().sign(key, expires_in=timedelta(minutes=15)).url for key in keys]
