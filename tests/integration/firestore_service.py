"""The Firestore emulator the integration tests use: FIRESTORE_EMULATOR_HOST when set, else
one started for the session on a free port (emulators/firestore.py) and stopped at its end.

Tests never wipe the emulator: each one works under its own collection prefix
(`unique_prefix`). Bind the fixtures into a test module with
`firestore_emulator = firestore_service.firestore_emulator` (an import would read as an unused
name to the linters).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from emulators import firestore as firestore_emulator_process
from emulators.process import Service, ServiceUnavailable
from tests.integration.availability import missing

if TYPE_CHECKING:
    from google.cloud import firestore

PROJECT = "local-project"
WHAT = "the Firestore emulator"
INSTALL_HINT = (
    "install the Google Cloud CLI with `gcloud components install cloud-firestore-emulator` "
    "and Java 17"
)


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A running emulator, with FIRESTORE_EMULATOR_HOST pointing at it for the session. One
    started here logs (and keeps its pid file) in a temporary folder, not in .data/."""
    preset = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if preset:
        host, _, port = preset.rpartition(":")
        if not port.isdigit() or not firestore_emulator_process.answers(host, int(port)):
            missing(
                f"{WHAT} at FIRESTORE_EMULATOR_HOST={preset}",
                "start it there, or unset FIRESTORE_EMULATOR_HOST",
            )
        yield Service(name="firestore", host=host, port=int(port), pid=None)
        return
    if shutil.which("gcloud") is None or shutil.which("java") is None:
        missing(WHAT, INSTALL_HINT)
    state_dir = tmp_path_factory.mktemp("firestore-emulator")
    try:
        service = firestore_emulator_process.start(project=PROJECT, state_dir=state_dir)
    except ServiceUnavailable as exc:
        missing(WHAT, f"{INSTALL_HINT} ({exc})")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIRESTORE_EMULATOR_HOST", service.address)
        try:
            yield service
        finally:
            firestore_emulator_process.stop(service, state_dir=state_dir)


@pytest.fixture(scope="session")
def firestore_client(firestore_emulator: Service) -> firestore.Client:
    """One client for the session, talking to the emulator (built after the fixture above
    set FIRESTORE_EMULATOR_HOST, which the client reads when it is made)."""
    from dal.firestore import make_firestore_client

    return make_firestore_client(PROJECT)


def unique_prefix() -> str:
    """A collection prefix no other test (or run) uses."""
    return f"t{uuid.uuid4().hex[:16]}_"
