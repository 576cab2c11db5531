"""The SDK's surface: what `__all__` names is what it offers, and its code imports nothing but
the standard library and httpx (its one dependency: clients/python/pyproject.toml)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import txt2img_client

PACKAGE = Path(txt2img_client.__file__).parent


class TestPublicApi:
    def test_all_names_exactly_the_public_names(self) -> None:
        public = {name for name in vars(txt2img_client) if not name.startswith("_")}
        assert set(txt2img_client.__all__) - {"__version__"} == public
        assert all(getattr(txt2img_client, name) is not None for name in txt2img_client.__all__)

    def test_its_modules_are_private(self) -> None:
        """Anything public is imported from the package itself."""
        modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
        assert modules and all(name.startswith("_") for name in modules)

    def test_it_imports_only_the_standard_library_and_httpx(self) -> None:
        imported: set[str] = set()
        for path in PACKAGE.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
        third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
        assert third_party == {"httpx"}

    def test_it_ships_its_types(self) -> None:
        assert (PACKAGE / "py.typed").is_file()
