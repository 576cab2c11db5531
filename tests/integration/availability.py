"""What to do when a local service a test needs is missing: skip with a message naming what to
install, except in CI (CI=true), where a missing service is a failure."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str, install_hint: str) -> NoReturn:
    message = f"{what} is not available: {install_hint}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
