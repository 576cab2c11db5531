"""The Postman collection, run by newman against the embedded service and the emulator stack."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from emulators.stack import Stack
from tests.e2e.conftest import BOOTSTRAP_KEY, RunningService
from tests.e2e.postman.build_collection import COLLECTION, render
from tests.integration.availability import missing

POSTMAN = Path(__file__).parent / "postman"


@pytest.fixture(scope="session")
def newman() -> Path:
    """The newman binary, installed from the committed package-lock on first use."""
    binary = POSTMAN / "node_modules" / ".bin" / "newman"
    # Every pytest-xdist worker has this session fixture: one installs, the others wait for it
    # (two `npm ci` in one folder remove each other's files).
    lock_path = Path(tempfile.gettempdir()) / f"txt2img-newman-{os.getuid()}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            npm = shutil.which("npm")
            if npm is None:
                missing("npm", "install Node.js 18+ with npm to run the Postman collection")
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=POSTMAN,
                check=True,
                timeout=600,
            )
    return binary


def run_collection(newman: Path, tmp_path: Path, base_url: str, key: str, other: str) -> None:
    report = tmp_path / "newman.json"
    done = subprocess.run(
        [
            str(newman),
            "run",
            str(COLLECTION),
            "--env-var",
            f"baseUrl={base_url}",
            "--env-var",
            f"apiKey={key}",
            "--env-var",
            f"otherKey={other}",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--timeout-request",
            "60000",
            "--color",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    stats = json.loads(report.read_text())["run"]["stats"]
    assert done.returncode == 0, done.stdout[-6000:]
    assert stats["assertions"]["failed"] == 0
    assert stats["requests"]["total"] >= 30


def test_collection_file_is_generated_from_its_source() -> None:
    """The committed collection is exactly what build_collection.py writes."""
    assert COLLECTION.read_text() == render()


def test_collection_against_the_embedded_service(
    newman: Path, service: RunningService, tmp_path: Path
) -> None:
    """Every route, happy and unhappy, against `make run`'s profile."""
    other = service.admin("keys", "create", "--owner", "postman-other").strip().splitlines()[-1]
    run_collection(newman, tmp_path, service.base_url, BOOTSTRAP_KEY, other)


def test_collection_against_the_emulator_stack(newman: Path, stack: Stack, tmp_path: Path) -> None:
    """Every route, happy and unhappy, through Pub/Sub, Firestore, GCS and Redis."""
    from tests.e2e.test_emulator_stack import admin

    other = admin(stack, "keys", "create", "--owner", "postman-other").strip().splitlines()[-1]
    run_collection(newman, tmp_path, stack.api_url, stack.api_key, other)
