"""The session's emulator stack, a pytest plugin (loaded by tests/conftest.py) so that every
test folder shares one: the e2e suites use it whole, the fault and load tests borrow its
emulators for stacks of their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.process import ServiceUnavailable
from emulators.stack import Stack, StackConfig, start_stack
from tests.integration.availability import missing


@pytest.fixture(scope="session")
def stack(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The emulator stack: Pub/Sub, Firestore, GCS emulators, Redis, worker and API."""
    state = tmp_path_factory.mktemp("stack")
    config = StackConfig(
        state_dir=state / "logs",
        data_dir=state / "data",
        model_path=tiny_model_dir,
        redis_url=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14"),
        min_backoff_s=1,
        max_backoff_s=2,
        extra_env={
            "PROGRESS_WRITE_INTERVAL_S": "0.1",
            "JOB_LEASE_S": "30",
            # Storage outages are part of the tests: give up on them quickly.
            "GCS_TIMEOUT_S": "3",
            "GCS_RETRY_TIMEOUT_S": "1",
            "RATE_LIMIT_SUBMIT_BURST": "500",
            "RATE_LIMIT_SUBMIT_PER_MINUTE": "600",
        },
    )
    try:
        running = start_stack(config)
    except ServiceUnavailable as exc:
        missing("the emulator stack", str(exc))
    try:
        yield running
    finally:
        running.stop()


def config_beside(stack: Stack, state: Path, **changes: Any) -> StackConfig:
    """A config for a stack of one's own (worker and API) on the session stack's emulators,
    Redis, bucket and model; `changes` sets the rest (a project or Pub/Sub prefix of its own,
    extra environment)."""
    by_name = {service.name: service for service in stack.services}
    base: dict[str, Any] = {
        "project": stack.config.project,
        "pubsub_port": by_name["pubsub"].port,
        "firestore_port": by_name["firestore"].port,
        "gcs_port": by_name["gcs"].port,
        "redis_url": stack.config.redis_url,
        "bucket": stack.env["GCS_BUCKET"],
        "state_dir": state / "logs",
        "data_dir": state / "data",
        "model_path": Path(stack.env["MODEL_PATH"]),
        "min_backoff_s": 1,
        "max_backoff_s": 2,
    }
    config = StackConfig(**(base | changes))
    if config.pubsub_prefix and "FIRESTORE_COLLECTION_PREFIX" not in config.extra_env:
        # Collections of its own too: each stack's sweep hands over the jobs it finds lost or
        # stranded to its own topic, so two stacks must not see each other's jobs.
        config.extra_env = {
            **config.extra_env,
            "FIRESTORE_COLLECTION_PREFIX": config.pubsub_prefix.replace("-", "_"),
        }
    return config
