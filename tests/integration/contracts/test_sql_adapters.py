"""The SQLAlchemy adapters, on a file-based SQLite database, against the port contracts.

The schema comes from the migrations, as in the service: dal.sql.migrate.upgrade builds it
once per session, and each test gets a copy of that database file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dal.sql import SqlApiKeyStore, SqlJobStore, create_sql_engine, upgrade
from tests.contracts.api_key_store_contract import ApiKeyStoreContract
from tests.contracts.job_store_contract import JobStoreContract, ManualClock


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "txt2img.sqlite3"
    engine = create_sql_engine(f"sqlite:///{path}")
    upgrade(engine)
    # Closing the last connection checkpoints the WAL into the file: it is complete on its own.
    engine.dispose()
    return path


@pytest.fixture
def engine(tmp_path: Path, migrated_sqlite_file: Path) -> Iterator[Engine]:
    path = tmp_path / "db" / "txt2img.sqlite3"
    path.parent.mkdir()
    shutil.copyfile(migrated_sqlite_file, path)
    engine = create_sql_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


class TestSqliteJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, engine: Engine, clock: ManualClock) -> SqlJobStore:
        return SqlJobStore(engine, clock=clock)


class TestSqliteApiKeyStore(ApiKeyStoreContract):
    @pytest.fixture
    def store(self, engine: Engine) -> SqlApiKeyStore:
        return SqlApiKeyStore(engine)
