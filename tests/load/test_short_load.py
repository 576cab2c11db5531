"""The short load run in `make test`: many keys submit, poll and download for a fixed time on
the emulator stack; afterwards every accepted job is final, every image downloads and the
pipeline made each image exactly once.

Its stack borrows the session stack's emulators (under a Google Cloud project of its own, so
with Pub/Sub topics of its own, and a Firestore collection prefix of its own) and runs its own
worker and API, so the worker's counters count this run alone and no other test's leftovers.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.stack import Stack, start_stack
from tests.emulator_stack_fixture import config_beside
from tests.load.runner import LOAD_ENV, LoadPlan, run_load

SHORT = LoadPlan(users=10, keys=5, duration_s=15, spawn_rate=10, drain_timeout_s=60)


@pytest.fixture(scope="module")
def load_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = config_beside(
        stack,
        tmp_path_factory.mktemp("load"),
        # A project of its own: its own Pub/Sub topics and subscriptions on the shared emulator.
        project=f"load-{secrets.token_hex(3)}",
        extra_env=LOAD_ENV,
    )
    running = start_stack(config)
    try:
        yield running
    finally:
        running.stop()


def test_short_load_reconciles(
    load_stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """accepted = succeeded + failed + canceled, none lost, every image generated once."""
    summary = run_load(
        env=load_stack.env,
        api_url=load_stack.api_url,
        worker_url=load_stack.worker_url,
        plan=SHORT,
        workdir=tmp_path,
    )
    with capsys.disabled():  # shown in every run, not only when the test fails
        print(f"\nload summary: {json.dumps(summary)}")  # noqa: T201
    assert summary["problems"] == []
    jobs, images = summary["jobs"], summary["images"]
    assert jobs["accepted"] > 0
    assert jobs["lost"] == 0
    # Nothing injects faults here: every job must succeed and every request pass.
    assert jobs["succeeded"] == jobs["accepted"]
    assert summary["failures"] == 0
    assert images["generated"] == images["expected"] == images["downloaded"]
