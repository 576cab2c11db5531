"""The in-process and SQLite-marker key revocations against their port contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from dal.errors import StoreUnavailable
from dal.memory import LocalKeyRevocations
from dal.sql.key_revocations import MarkerFileKeyRevocations
from tests.contracts.key_revocations_contract import KeyRevocationsContract, Pair


class TestLocalKeyRevocations(KeyRevocationsContract):
    @pytest.fixture
    def pair(self) -> Pair:
        one = LocalKeyRevocations()
        return one, one


class TestMarkerFileKeyRevocations(KeyRevocationsContract):
    @pytest.fixture
    def pair(self, tmp_path: Path) -> Pair:
        database = tmp_path / "txt2img.sqlite3"
        # Two processes open the same database: each builds its own view of the marker.
        return MarkerFileKeyRevocations.beside(database), MarkerFileKeyRevocations.beside(database)

    def test_the_marker_sits_beside_the_database(self, tmp_path: Path) -> None:
        MarkerFileKeyRevocations.beside(tmp_path / "txt2img.sqlite3").announce()
        assert (tmp_path / "txt2img.sqlite3.key-revocations").exists()

    def test_a_deleted_marker_vouches_for_nothing_and_never_brings_an_epoch_back(
        self, tmp_path: Path
    ) -> None:
        """Deleting the marker by hand must not bring back an epoch an old entry was kept
        in: until it is there again, no process may keep keys."""
        revocations = MarkerFileKeyRevocations(tmp_path / "marker")
        revocations.listen()
        before = revocations.epoch()
        (tmp_path / "marker").unlink()
        assert revocations.epoch() is None
        revocations.announce()
        assert revocations.epoch() not in (None, before)

    def test_an_unwritable_marker_raises_store_unavailable(self, tmp_path: Path) -> None:
        # A directory where the marker should be: not writable, even by root.
        (tmp_path / "marker").mkdir()
        with pytest.raises(StoreUnavailable):
            MarkerFileKeyRevocations(tmp_path / "marker").announce()

    def test_a_marker_that_cannot_be_read_vouches_for_nothing(self, tmp_path: Path) -> None:
        # A path through a regular file: stat() fails with ENOTDIR, not "no such file".
        (tmp_path / "file").write_text("")
        assert MarkerFileKeyRevocations(tmp_path / "file" / "marker").epoch() is None
