"""The Pub/Sub emulator for integration tests, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from emulators import pubsub
from emulators.process import ServiceUnavailable
from tests.integration.availability import missing


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a running Pub/Sub emulator; PUBSUB_EMULATOR_HOST points at it."""
    try:
        service = pubsub.start(state_dir=tmp_path_factory.mktemp("pubsub"))
    except ServiceUnavailable as exc:
        missing("the Pub/Sub emulator", str(exc))
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = service.address
    try:
        yield service.address
    finally:
        pubsub.stop(service)
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
