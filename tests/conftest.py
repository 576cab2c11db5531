"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The model stack must never reach for a hub: tests build their model offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Fixture modules that test modules load as plugins: their asserts are rewritten wherever a
# worker of `pytest -n` happens to import them first.
pytest.register_assert_rewrite("tests.integration.postgres_service")

# The session emulator stack (`stack`), shared by the e2e, fault and load tests.
pytest_plugins = ["tests.emulator_stack_fixture"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Stable Diffusion pipeline, built offline once per session."""
    from gpu_worker.tiny_model import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


# Session services that tests share and change (jobs left queued, a worker restarted): every
# test that uses one runs on the same pytest-xdist worker, in the order of a serial run.
_SHARED_SESSION_FIXTURES = ("stack", "service")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs `pytest -n 2 --dist loadgroup`: a test that uses a shared session
    service joins that service's group; any other test joins its file's group, so a module's
    fixtures start once."""
    for item in items:
        used = getattr(item, "fixturenames", ())
        shared = next((name for name in _SHARED_SESSION_FIXTURES if name in used), None)
        group = f"session-{shared}" if shared else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
