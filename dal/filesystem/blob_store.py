from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import timedelta
from pathlib import Path

from dal.errors import BlobNotFound, StoreUnavailable
from dal.ports import SignedUrl
from dal.url_signing import HmacUrlSigner, validate_blob_key


class FilesystemBlobStore:
    """Blobs as files under one root folder; the API serves them at HMAC-signed URLs."""

    def __init__(self, root: Path, signer: HmacUrlSigner) -> None:
        self._root = root.resolve()
        self._signer = signer

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half an image, even if we crash mid-write.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                # mkstemp makes 0600 files; images are meant to be read by other processes.
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StoreUnavailable(f"cannot write blob {key!r}: {exc.strerror}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read blob {key!r}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        return self._signer.sign(key, expires_in=expires_in)

    def ping(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"blob root {self._root} is not usable: {exc}") from exc
        if not os.access(self._root, os.W_OK):
            raise StoreUnavailable(f"blob root {self._root} is not writable")

    def _path(self, key: str) -> Path:
        validate_blob_key(key)
        path = (self._root / key).resolve()
        # validate_blob_key already forbids '..'; this also defeats symlinks pointing outside.
        if not path.is_relative_to(self._root):
            raise ValueError(f"invalid blob key {key!r}")
        return path
