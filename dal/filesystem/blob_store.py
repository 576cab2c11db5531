from __future__ import annotations

import contextlib
import os
import secrets
import stat
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
        path, existing = self._resolve(key)
        folder = path.rpartition("/")[0]
        # Write then rename: a reader never sees half an image, even if we crash mid-write. The
        # temporary name is this writer's alone: two workers may store the same key (a lapsed
        # lease), and O_EXCL refuses a name already taken rather than share it.
        tmp = f"{folder}/.tmp-{secrets.token_hex(8)}{os.path.splitext(path)[1]}"
        try:
            self._make_folders(key, existing)
            # os.open, not mkstemp and a file object: the blob is one write, and the random
            # name, the buffered file and the chmod by path cost more than the write (issue 19).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                try:
                    # Images are meant to be read by other processes, whatever the umask.
                    os.fchmod(fd, 0o644)
                    _write_all(fd, data)
                finally:
                    os.close(fd)
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
        return self._resolve(key)[0]

    def _resolve(self, key: str) -> tuple[str, int]:
        """Where `key` lives, and how many of its components exist already. validate_blob_key
        already forbids '..' and absolute keys, so only a symlink below the root could lead
        elsewhere: none is followed. The root was resolved once; each of the key's own
        components is checked with one lstat (resolving the whole path stats every component
        from / on every call, three times the CPU of a small read, issue 19). Components that
        do not exist yet are for a put to create."""
        validate_blob_key(key)
        path = str(self._root)
        existing = 0
        for part in key.split("/"):
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except OSError:  # missing (a put creates it), or unreadable: the I/O then says why
                break
            if stat.S_ISLNK(mode):
                raise ValueError(f"invalid blob key {key!r}: it goes through a symlink")
            existing += 1
        return f"{self._root}/{key}", existing

    def _make_folders(self, key: str, existing: int) -> None:
        """Create the folders of `key` that `_resolve` found missing: for a new job's folder
        under its owner's, one mkdir; anything more (the root itself, a new owner) through
        makedirs. A writer creating them meanwhile is no error."""
        folders = key.split("/")[:-1]
        if existing >= len(folders):
            return
        folder = f"{self._root}/{'/'.join(folders)}"
        if existing == len(folders) - 1:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
            return
        os.makedirs(folder, exist_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
