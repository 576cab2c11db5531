"""Key revocations for a SQLite database: a marker file beside it.

Every process that opens a SQLite file runs on the host that holds it, so a file next to the
database reaches all of them: the API and the admin command that revokes a key. A revocation
appends one byte to the marker; a reader compares the marker's inode, size and modification
time, one stat() per look and no database read. Appending (not rewriting) keeps the size
growing, so two revocations can never leave the marker looking as it did before them. A
listening process creates the marker; while it is missing (deleted by hand), no process can
vouch for a key it verified.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from pathlib import Path

from dal.errors import StoreUnavailable


class MarkerFileKeyRevocations:
    def __init__(self, marker: Path) -> None:
        self._marker = marker

    @classmethod
    def beside(cls, database: Path) -> MarkerFileKeyRevocations:
        return cls(database.with_name(database.name + ".key-revocations"))

    def announce(self) -> None:
        self._append(b".")

    def epoch(self) -> Hashable | None:
        try:
            status = os.stat(self._marker)
        except OSError:
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns)

    def listen(self) -> Callable[[], None]:
        self._append(b"")
        return _nothing_to_stop

    def _append(self, mark: bytes) -> None:
        try:
            fd = os.open(self._marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if mark:
                    os.write(fd, mark)
                    # The revoking command returns only once the mark is on disk: a crash
                    # after it cannot take the revocation's notice back.
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreUnavailable(f"key revocation marker {self._marker}: {exc}") from exc


def _nothing_to_stop() -> None:
    """Nothing runs in the background: epoch() looks for itself."""


__all__ = ["MarkerFileKeyRevocations"]
