"""Shared fixtures for integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_worker.tiny_model import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Stable Diffusion pipeline, built offline once per session."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")
