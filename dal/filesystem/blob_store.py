from __future__ import annotations

import contextlib
import os
import stat
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
        folder, name = os.path.split(path)
        try:
            os.makedirs(folder, exist_ok=True)
            # Write then rename: a reader never sees half an image, even if we crash mid-write.
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(name)[1])
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
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read blob {key!r}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        return self._signer.sign(key, expires_in=expires_in)

    def ping(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"blob root {self._root} is not usable: {exc}") from exc
        if not os.access(self._root, os.W_OK):
            raise StoreUnavailable(f"blob root {self._root} is not writable")

    def _path(self, key: str) -> str:
        """Where `key` lives. validate_blob_key already forbids '..' and absolute keys, so
        only a symlink below the root could lead elsewhere: none is followed. The root was
        resolved once; each of the key's own components is checked with one lstat (resolving
        the whole path stats every component from / on every call, three times the CPU of a
        small read, issue 19). Components that do not exist yet are for a put to create."""
        validate_blob_key(key)
        path = str(self._root)
        for part in key.split("/"):
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except OSError:  # missing (a put creates it), or unreadable: the I/O then says why
                break
            if stat.S_ISLNK(mode):
                raise ValueError(f"invalid blob key {key!r}: it goes through a symlink")
        return f"{self._root}/{key}"
