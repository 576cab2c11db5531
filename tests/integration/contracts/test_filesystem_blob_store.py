"""FilesystemBlobStore against the BlobStore contract, plus what only a filesystem can get wrong."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import cast

import pytest

from dal.errors import BlobNotFound
from dal.filesystem import FilesystemBlobStore
from dal.url_signing import HmacUrlSigner
from tests.contracts.blob_store_contract import KEY, BlobStoreContract, HmacSignedUrlContract


class _NotBytes:
    """Not bytes-like: writing it fails after the temporary file exists, like a crash mid-write."""


class TestFilesystemBlobStore(BlobStoreContract, HmacSignedUrlContract):
    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        return tmp_path / "blobs"

    @pytest.fixture
    def store(self, root: Path, signer: HmacUrlSigner) -> FilesystemBlobStore:
        return FilesystemBlobStore(root, signer)

    def test_blob_is_a_file_under_the_root(self, store: FilesystemBlobStore, root: Path) -> None:
        """A blob lives at root/key, so the layout is inspectable and survives restarts."""
        store.put(KEY, b"pixels", content_type="image/png")
        assert (root / KEY).read_bytes() == b"pixels"

    def test_symlink_pointing_outside_the_root_cannot_be_read_through(
        self, store: FilesystemBlobStore, root: Path, tmp_path: Path
    ) -> None:
        """A symlink inside the root that leads outside it does not expose the target."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.png").write_bytes(b"secret")
        root.mkdir(parents=True, exist_ok=True)
        (root / "images").symlink_to(outside, target_is_directory=True)
        (root / "leak.png").symlink_to(outside / "secret.png")

        for key in ("images/secret.png", "leak.png"):
            with pytest.raises((ValueError, BlobNotFound)):
                store.get(key)
            with pytest.raises((ValueError, BlobNotFound)):
                store.put(key, b"overwritten", content_type="image/png")
            assert not _exists_or_refused(store, key)
        assert (outside / "secret.png").read_bytes() == b"secret"
        assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]

    def test_a_symlink_at_any_depth_below_the_root_is_not_followed(
        self, store: FilesystemBlobStore, root: Path, tmp_path: Path
    ) -> None:
        """Each of a key's folders is checked, not only the first and the file: a job's folder
        made a link to elsewhere is refused, for reads and writes alike."""
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (outside / "0.png").write_bytes(b"not a blob")
        store.put("images/owner/job-1/0.png", b"pixels", content_type="image/png")
        (root / "images" / "owner" / "job-2").symlink_to(outside, target_is_directory=True)

        with pytest.raises(ValueError):
            store.get("images/owner/job-2/0.png")
        with pytest.raises(ValueError):
            store.put("images/owner/job-2/1.png", b"pixels", content_type="image/png")
        assert sorted(p.name for p in outside.iterdir()) == ["0.png"]
        assert store.get("images/owner/job-1/0.png") == b"pixels"

    def test_successful_put_leaves_no_temporary_files(
        self, store: FilesystemBlobStore, root: Path
    ) -> None:
        """After puts and overwrites only the blobs themselves remain on disk."""
        for i in range(3):
            store.put(KEY, b"version %d" % i, content_type="image/png")
        store.put("images/other.png", b"other", content_type="image/png")
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert files == sorted([KEY, "images/other.png"])

    def test_failed_write_leaves_previous_content_and_no_partial_file(
        self, store: FilesystemBlobStore, root: Path
    ) -> None:
        """A write that fails midway keeps the old blob intact and leaves no temporary file."""
        store.put(KEY, b"old content", content_type="image/png")
        broken = cast(bytes, _NotBytes())
        with pytest.raises(TypeError):
            store.put(KEY, broken, content_type="image/png")
        with pytest.raises(TypeError):
            store.put("images/new.png", broken, content_type="image/png")
        assert store.get(KEY) == b"old content"
        assert not store.exists("images/new.png")
        files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        assert files == [KEY]

    def test_ping_creates_a_missing_root(self, store: FilesystemBlobStore, root: Path) -> None:
        """ping on a fresh store makes the root folder, so the first put cannot fail on it."""
        assert not root.exists()
        store.ping()
        assert root.is_dir()

    def test_blobs_are_readable_by_other_processes_whatever_the_umask(
        self, store: FilesystemBlobStore, root: Path
    ) -> None:
        """Images are written for other processes to read (a sidecar, a server of the folder):
        0644 even under a umask of 077, and no temporary file is left beside them."""
        previous = os.umask(0o077)
        try:
            store.put("images/owner/job-1/0.png", b"pixels", content_type="image/png")
        finally:
            os.umask(previous)
        blob = root / "images" / "owner" / "job-1" / "0.png"
        assert stat.S_IMODE(blob.stat().st_mode) == 0o644
        assert [p.name for p in blob.parent.iterdir()] == ["0.png"]

    def test_a_put_creates_only_the_folders_it_is_missing(
        self, store: FilesystemBlobStore, root: Path
    ) -> None:
        """A new job's folder under an existing owner's, and a whole new path, both get made;
        an existing folder's other blobs stay."""
        store.put("images/owner/job-1/0.png", b"one", content_type="image/png")
        store.put("images/owner/job-2/0.png", b"two", content_type="image/png")
        store.put("images/owner/job-1/1.png", b"three", content_type="image/png")
        store.put("thumbnails/a/b/c.png", b"four", content_type="image/png")
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert files == [
            "images/owner/job-1/0.png",
            "images/owner/job-1/1.png",
            "images/owner/job-2/0.png",
            "thumbnails/a/b/c.png",
        ]
        assert store.get("images/owner/job-1/1.png") == b"three"


def _exists_or_refused(store: FilesystemBlobStore, key: str) -> bool:
    try:
        return store.exists(key)
    except ValueError:
        return False
