"""The SQLAlchemy adapters, on a file-based SQLite database, against the port contracts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dal.sql import SqlApiKeyStore, SqlJobStore, create_sql_engine, metadata
from tests.contracts.api_key_store_contract import ApiKeyStoreContract
from tests.contracts.job_store_contract import JobStoreContract, ManualClock


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_sql_engine(f"sqlite:///{tmp_path / 'db' / 'txt2img.sqlite3'}")
    metadata.create_all(engine)
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
