"""PostgreSQL for the integration tests.

The server: TEST_POSTGRES_ADMIN_URL when set (any database on it that the user may CREATE
DATABASE from, e.g. postgresql+psycopg://postgres@db.example:5432/postgres), otherwise the
local one on 127.0.0.1:5432, started through pg_ctlcluster if it is down. Without either the
tests skip, naming what to install (in CI they fail).

Fixtures (import the ones a module uses):

* `postgres_admin_url` (session): URL of the server's maintenance database.
* `postgres_engine` (function): an engine on one database per session, migrated once with
  dal.sql.migrate.upgrade and emptied (TRUNCATE) before each test.
* `empty_postgres_url` (function): a database of its own, empty, dropped after the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from dal.sql import create_sql_engine, metadata, upgrade
from emulators.postgres import (
    INSTALL_HINT,
    create_database,
    database_url,
    drop_database,
    ensure_running,
)
from emulators.process import ServiceUnavailable
from tests.integration.availability import missing

ADMIN_URL_ENV = "TEST_POSTGRES_ADMIN_URL"
_OR_SET = f"or set {ADMIN_URL_ENV} to the admin URL of a server"


def unique_database_name(prefix: str = "txt2img_test") -> str:
    """A name no other test session (or pytest-xdist worker) uses at the same time."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get(ADMIN_URL_ENV)
    if not url:
        try:
            service = ensure_running()
        except ServiceUnavailable as exc:
            missing("PostgreSQL", f"{exc}; {_OR_SET}")
        url = database_url("postgres", host=service.host, port=service.port)
    engine = create_sql_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", exc)
        missing("PostgreSQL", f"cannot connect to {url} ({reason}); {INSTALL_HINT}, {_OR_SET}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def _postgres_session_engine(postgres_admin_url: str) -> Iterator[Engine]:
    name = unique_database_name()
    url = create_database(postgres_admin_url, name)
    engine = create_sql_engine(url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        drop_database(postgres_admin_url, name)


@pytest.fixture
def postgres_engine(_postgres_session_engine: Engine) -> Engine:
    """The session's migrated database, with every table empty."""
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with _postgres_session_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables}"))
    return _postgres_session_engine


@pytest.fixture
def empty_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database with nothing in it, not even the schema."""
    name = unique_database_name("txt2img_empty")
    url = create_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, name)
