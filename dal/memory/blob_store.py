from __future__ import annotations

import threading
from datetime import timedelta

from dal.errors import BlobNotFound
from dal.ports import SignedUrl
from dal.url_signing import HmacUrlSigner, validate_blob_key


class MemoryBlobStore:
    """Blobs in a dict; URLs are HMAC-signed and served by the API like the filesystem store."""

    def __init__(self, signer: HmacUrlSigner) -> None:
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._signer = signer

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        validate_blob_key(key)
        with self._lock:
            self._blobs[key] = (bytes(data), content_type)

    def get(self, key: str) -> bytes:
        validate_blob_key(key)
        with self._lock:
            try:
                return self._blobs[key][0]
            except KeyError:
                raise BlobNotFound(key) from None

    def content_type(self, key: str) -> str:
        validate_blob_key(key)
        with self._lock:
            try:
                return self._blobs[key][1]
            except KeyError:
                raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        validate_blob_key(key)
        with self._lock:
            self._blobs.pop(key, None)

    def exists(self, key: str) -> bool:
        validate_blob_key(key)
        with self._lock:
            return key in self._blobs

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._blobs)

    def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        return self._signer.sign(key, expires_in=expires_in)

    def ping(self) -> None:
        return None
