"""The README stays true to the code: every setting is documented, every documented one exists."""

from __future__ import annotations

import re
from pathlib import Path

from api.problems import PROBLEM_TYPES
from dal.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def documented_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| variable | default | meaning |", 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        first_cell = line.split("|")[1] if line.startswith("|") else ""
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_every_setting_is_in_the_readme_and_nothing_else() -> None:
    """The README's configuration table lists exactly the settings' variables."""
    assert documented_variables() == {name.upper() for name in Settings.model_fields}


def test_every_problem_code_is_documented() -> None:
    """docs/api.md lists every problem code the API can answer with."""
    api_doc = (ROOT / "docs" / "api.md").read_text()
    missing = [code for code in PROBLEM_TYPES if f"`{code}`" not in api_doc]
    assert missing == []
