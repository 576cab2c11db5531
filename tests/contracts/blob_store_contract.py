"""The BlobStore contract: one set of cases that every BlobStore adapter must pass.

`BlobStoreContract` holds the generic cases: a test module subclasses it (as
`TestXxxBlobStore`) and provides a `store` fixture; the manual `clock` fixture is defined
here and overridable.

`HmacSignedUrlContract` adds the cases for stores whose URLs the API serves itself, signed
by an HmacUrlSigner (memory, filesystem): it provides a `signer` fixture on the manual clock
that such a `store` fixture is built with, and checks that the signer accepts exactly the
URLs the store issued. Stores that sign their own URLs (GCS, V4) test their signatures in
their own module instead.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from dal.errors import BlobNotFound, BlobUrlSignatureInvalid
from dal.ports import BlobStore
from dal.url_signing import HmacUrlSigner
from tests.contracts.job_store_contract import ManualClock

BASE_URL = "https://api.example.test"
PATH_PREFIX = "/v1/blobs/"
SECRET = "contract-test-secret"

OWNER_DIGEST = hashlib.sha256(b"alice").hexdigest()[:16]
KEY = f"images/{OWNER_DIGEST}/job-0001/0.png"
PNG_HEADER = b"\x89PNG\r\n\x1a\n"

INVALID_KEYS = [
    "../x",
    "/abs",
    "a//b",
    "a/../b",
    "a b",
    "",
    "x?y",
    "a/",
    ".hidden",
    "a/./b",
    "x#y",
    "a\\b",
    "a\x00b",
    "k" * 513,
]


def parse_signed_url(url: str) -> tuple[str, int, str]:
    """(key, expires, sig) as the API's blob route would read them from a signed URL."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
    assert parts.path.startswith(PATH_PREFIX)
    query = parse_qs(parts.query, strict_parsing=True)
    assert sorted(query) == ["expires", "sig"]
    return unquote(parts.path[len(PATH_PREFIX) :]), int(query["expires"][0]), query["sig"][0]


class BlobStoreContract:
    """Cases every BlobStore adapter must pass; subclasses provide the `store` fixture."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    # ---- put / get / delete / exists ---------------------------------------------------------

    def test_put_then_get_round_trips_bytes(self, store: BlobStore) -> None:
        """get returns exactly the bytes that put stored, for any byte values and for none."""
        data = PNG_HEADER + bytes(range(256)) * 64
        store.put(KEY, data, content_type="image/png")
        assert store.get(KEY) == data
        assert store.exists(KEY)
        store.put("images/empty.png", b"", content_type="image/png")
        assert store.get("images/empty.png") == b""

    def test_put_overwrites_existing_blob(self, store: BlobStore) -> None:
        """A second put under the same key replaces the content entirely."""
        store.put(KEY, b"first version, rather long" * 10, content_type="image/png")
        store.put(KEY, b"second", content_type="image/png")
        assert store.get(KEY) == b"second"

    def test_keys_are_independent(self, store: BlobStore) -> None:
        """Blobs under different keys, including a key's prefix, do not affect each other."""
        store.put("images/a/1.png", b"one", content_type="image/png")
        store.put("images/a/2.png", b"two", content_type="image/png")
        store.delete("images/a/1.png")
        assert store.get("images/a/2.png") == b"two"
        assert not store.exists("images/a")

    def test_get_missing_raises_blob_not_found(self, store: BlobStore) -> None:
        """Getting a key that holds nothing raises BlobNotFound naming the key."""
        with pytest.raises(BlobNotFound) as info:
            store.get(KEY)
        assert info.value.key == KEY

    def test_delete_removes_and_missing_delete_is_fine(self, store: BlobStore) -> None:
        """After delete the blob is gone, and deleting a missing key does not raise."""
        store.put(KEY, b"data", content_type="image/png")
        store.delete(KEY)
        assert not store.exists(KEY)
        with pytest.raises(BlobNotFound):
            store.get(KEY)
        store.delete(KEY)
        store.delete("images/never/was.png")
        assert not store.exists("images/never/was.png")

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused(self, store: BlobStore, key: str) -> None:
        """Keys that could escape the root or break a URL raise ValueError on every operation."""
        with pytest.raises(ValueError):
            store.put(key, b"data", content_type="image/png")
        with pytest.raises(ValueError):
            store.get(key)
        with pytest.raises(ValueError):
            store.exists(key)
        with pytest.raises(ValueError):
            store.delete(key)
        with pytest.raises(ValueError):
            store.signed_url(key, expires_in=timedelta(minutes=5))

    # ---- signed URLs -------------------------------------------------------------------------

    def test_signed_url_names_the_key_and_expires_in_the_future(
        self, store: BlobStore, clock: ManualClock
    ) -> None:
        """signed_url gives a URL for this key with a tz-aware expiry after now."""
        store.put(KEY, b"data", content_type="image/png")
        signed = store.signed_url(KEY, expires_in=timedelta(minutes=15))
        assert KEY in signed.url
        assert signed.expires_at.tzinfo is not None
        assert signed.expires_at.utcoffset() == timedelta(0)
        assert clock() + timedelta(minutes=15) <= signed.expires_at
        assert signed.expires_at < clock() + timedelta(minutes=15, seconds=1)

    def test_ping_succeeds(self, store: BlobStore) -> None:
        """ping returns without error on a usable store."""
        store.ping()


class HmacSignedUrlContract:
    """Signed-URL cases for stores whose URLs the API serves, signed by `signer`; mix in
    next to BlobStoreContract (which provides `clock`)."""

    @pytest.fixture
    def signer(self, clock: ManualClock) -> HmacUrlSigner:
        return HmacUrlSigner(SECRET, path_prefix=PATH_PREFIX, base_url=BASE_URL, clock=clock)

    def test_signed_url_carries_key_and_expiry(self, store: BlobStore) -> None:
        """The URL is the API's blob route for this key, with the expiry it reports."""
        store.put(KEY, b"data", content_type="image/png")
        signed = store.signed_url(KEY, expires_in=timedelta(minutes=15))
        key, expires, _ = parse_signed_url(signed.url)
        assert key == KEY
        assert expires == signed.expires_at.timestamp()

    def test_signed_url_verifies_until_it_expires(
        self, store: BlobStore, signer: HmacUrlSigner, clock: ManualClock
    ) -> None:
        """The signer accepts the URL's own key, expiry and signature right up to the expiry."""
        signed = store.signed_url(KEY, expires_in=timedelta(minutes=15))
        key, expires, sig = parse_signed_url(signed.url)
        signer.verify(key, expires=expires, sig=sig)
        clock.now = signed.expires_at - timedelta(microseconds=1)
        signer.verify(key, expires=expires, sig=sig)

    @pytest.mark.parametrize("past_expiry", [timedelta(0), timedelta(seconds=1), timedelta(days=9)])
    def test_signed_url_fails_after_expiry(
        self,
        store: BlobStore,
        signer: HmacUrlSigner,
        clock: ManualClock,
        past_expiry: timedelta,
    ) -> None:
        """Once the clock reaches the expiry the signature is refused."""
        signed = store.signed_url(KEY, expires_in=timedelta(minutes=15))
        key, expires, sig = parse_signed_url(signed.url)
        clock.now = signed.expires_at + past_expiry
        with pytest.raises(BlobUrlSignatureInvalid):
            signer.verify(key, expires=expires, sig=sig)

    @pytest.mark.parametrize(
        "tampered_key",
        [
            KEY.replace("job-0001", "job-0002"),
            KEY.replace(OWNER_DIGEST, hashlib.sha256(b"mallory").hexdigest()[:16]),
            KEY.replace("0.png", "1.png"),
            KEY + "x",
        ],
    )
    def test_signature_fails_for_another_key(
        self, store: BlobStore, signer: HmacUrlSigner, tampered_key: str
    ) -> None:
        """A signature for one key does not open another job's or another owner's blob."""
        key, expires, sig = parse_signed_url(
            store.signed_url(KEY, expires_in=timedelta(minutes=15)).url
        )
        assert tampered_key != key
        with pytest.raises(BlobUrlSignatureInvalid):
            signer.verify(tampered_key, expires=expires, sig=sig)

    @pytest.mark.parametrize("delta", [1, -1, 3600, 10**9])
    def test_signature_fails_for_a_changed_expiry(
        self, store: BlobStore, signer: HmacUrlSigner, delta: int
    ) -> None:
        """Extending or otherwise altering the expiry invalidates the signature."""
        key, expires, sig = parse_signed_url(
            store.signed_url(KEY, expires_in=timedelta(minutes=15)).url
        )
        with pytest.raises(BlobUrlSignatureInvalid):
            signer.verify(key, expires=expires + delta, sig=sig)

    def test_signature_fails_when_tampered(
        self, store: BlobStore, signer: HmacUrlSigner, clock: ManualClock
    ) -> None:
        """An altered, truncated, re-cased or foreign signature is refused."""
        key, expires, sig = parse_signed_url(
            store.signed_url(KEY, expires_in=timedelta(minutes=15)).url
        )
        flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        foreign = HmacUrlSigner(
            "another-secret", path_prefix=PATH_PREFIX, base_url=BASE_URL, clock=clock
        )
        _, foreign_expires, foreign_sig = parse_signed_url(
            foreign.sign(key, expires_in=timedelta(minutes=15)).url
        )
        assert foreign_expires == expires
        non_ascii = "é" * 64
        for bad in (flipped, sig[:-1], sig.upper(), "", "0" * 64, foreign_sig, non_ascii):
            assert bad != sig
            with pytest.raises(BlobUrlSignatureInvalid):
                signer.verify(key, expires=expires, sig=bad)
