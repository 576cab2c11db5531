"""SQLite for the integration tests, as `postgres_service` is PostgreSQL: a pytest plugin
module (`pytest_plugins = ["tests.integration.sqlite_database"]`).

Fixtures:

* `sqlite_engine` (function): an engine on a SQLite file of the test's own, migrated with
  dal.sql.migrate.upgrade, disposed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dal.sql import create_sql_engine, upgrade


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_sql_engine(f"sqlite:///{tmp_path / 'txt2img.sqlite3'}")
    upgrade(engine)
    yield engine
    engine.dispose()
