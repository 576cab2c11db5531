"""tools/locks.py check: the committed locks agree with pyproject.toml, and the check notices
each way they can drift apart (on copies of the locks, never the real ones)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from tools.locks import LOCKS, check, inputs_digest, load_project, read_pins


@pytest.fixture
def project() -> dict[str, Any]:
    return copy.deepcopy(load_project())


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    folder = tmp_path / "locks"
    shutil.copytree(LOCKS, folder)
    return folder


def replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


class TestCommittedLocks:
    def test_agree_with_pyproject(self, project: dict[str, Any]) -> None:
        """What `make lint` runs: no problem at all."""
        assert check(project) == []

    def test_every_lock_carries_todays_digest(self, project: dict[str, Any]) -> None:
        digest = inputs_digest(project)
        for lock in sorted(LOCKS.glob("*.txt")):
            if lock.name == "torch-cuda.txt":
                continue  # written by hand, checked against the worker extra's pin instead
            assert lock.read_text().splitlines()[0] == f"# inputs-sha256: {digest}", lock.name

    def test_the_images_share_the_tests_versions(self) -> None:
        dev = read_pins(LOCKS / "dev.txt")
        for name in ("api.txt", "worker.txt"):
            pins = read_pins(LOCKS / name)
            assert pins and all(dev[package] == version for package, version in pins.items())


class TestDrift:
    def test_a_moved_requirement_is_a_stale_lock(
        self, project: dict[str, Any], locks: Path
    ) -> None:
        """httpx moved back into the dev extra without `make lock`: every lock is stale."""
        table = project["project"]
        table["dependencies"] = [d for d in table["dependencies"] if not d.startswith("httpx")]
        table["optional-dependencies"]["dev"].append("httpx>=0.27,<1")
        problems = check(project, locks)
        assert any("api.txt was not written from today's" in p for p in problems)

    def test_a_formatting_change_is_not_drift(self, project: dict[str, Any], locks: Path) -> None:
        project["tool"]["ruff"]["line-length"] = 120
        assert check(project, locks) == []

    def test_a_pin_outside_the_specifier(self, project: dict[str, Any], locks: Path) -> None:
        version = read_pins(locks / "api.txt")["fastapi"]
        replace_line(locks / "api.txt", f"fastapi=={version}", "fastapi==0.1.0")
        replace_line(locks / "dev.txt", f"fastapi=={version}", "fastapi==0.1.0")
        problems = check(project, locks)
        assert any("api.txt pins fastapi==0.1.0, outside" in p for p in problems)

    def test_a_requirement_the_lock_lacks(self, project: dict[str, Any], locks: Path) -> None:
        project["project"]["optional-dependencies"]["api"].append("left-pad-nowhere>=1")
        problems = check(project, locks)
        assert "api.txt does not pin left-pad-nowhere" in problems

    def test_an_image_lock_that_differs_from_the_tests(
        self, project: dict[str, Any], locks: Path
    ) -> None:
        version = read_pins(locks / "api.txt")["uvicorn"]
        replace_line(locks / "api.txt", f"uvicorn=={version}", f"uvicorn=={version}.post9")
        problems = check(project, locks)
        assert any(
            p.startswith(f"api.txt pins uvicorn=={version}.post9 but dev.txt") for p in problems
        )

    def test_torch_builds_follow_the_worker_pin(self, project: dict[str, Any], locks: Path) -> None:
        replace_line(locks / "torch-cuda.txt", "+cu126", "+cu130")
        replace_line(locks / "torch-cpu.txt", "+cpu", "")
        problems = check(project, locks)
        assert "torch-cuda.txt must pin a CUDA 12 build of torch==2.13.0" in problems
        assert "torch-cpu.txt must pin a CPU build of torch==2.13.0" in problems

    def test_a_missing_lock(self, project: dict[str, Any], locks: Path) -> None:
        (locks / "build.txt").unlink()
        assert "build.txt is missing: run `make lock`" in check(project, locks)
