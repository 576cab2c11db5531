"""`bench.compare` runs a git revision's own files: `export_revision` against git itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.compare import REPO, export_revision


def _git(*args: str) -> bytes:
    return subprocess.run(  # git from PATH, as bench.compare runs it
        ["git", *args],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout


def test_a_revision_is_exported_with_every_tracked_file_as_committed(tmp_path: Path) -> None:
    exported = export_revision("HEAD", tmp_path / "code")

    tracked = _git("ls-tree", "-r", "--name-only", "HEAD").decode().split("\n")
    files = sorted(name for name in tracked if name)
    assert (
        sorted(str(path.relative_to(exported)) for path in exported.rglob("*") if path.is_file())
        == files
    )
    assert (exported / "pyproject.toml").read_bytes() == _git("show", "HEAD:pyproject.toml")


def test_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        export_revision("no-such-revision-anywhere", tmp_path / "code")
