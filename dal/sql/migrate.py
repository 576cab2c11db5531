"""Bring a database's schema to the latest (or a given) Alembic revision.

    python -m dal.sql.migrate [--url URL] [--revision REV]

Alembic is configured in code: the scripts ship inside the package (dal/sql/migrations), so no
alembic.ini is needed at run time. Upgrades are serialized between processes — on PostgreSQL
by a session-level advisory lock, on SQLite by an immediate (write-locking) transaction — and
upgrading a database that is already at the target revision changes nothing, so every API
replica and worker may call `upgrade` at start.

A database whose tables were made by `metadata.create_all` before migrations existed (the
embedded profile's SQLite file) has no alembic_version table: when its tables are exactly
those of the first revision, it is stamped with that revision and upgraded from there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from dal.errors import SchemaNotManaged
from dal.sql.engine import create_sql_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# The pg_advisory_lock key every process that migrates this schema takes: an arbitrary fixed
# bigint, unlikely to collide with another application's keys in a shared database.
ADVISORY_LOCK_KEY = 0x2F1C_6A4E_93B7_05D1

# The revision a database made by `metadata.create_all` corresponds to, and its columns.
BASELINE_REVISION = "0001"
_BASELINE_COLUMNS = {
    "jobs": frozenset(
        {
            "id",
            "owner",
            "model",
            "status",
            "progress",
            "attempts",
            "params",
            "error",
            "images",
            "idempotency_key",
            "request_fingerprint",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
            "lease_expires_at",
        }
    ),
    "api_keys": frozenset({"id", "owner", "key_hash", "label", "created_at", "revoked_at"}),
}


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged scripts; `connection`, when given, is the one
    env.py runs the migrations on (the caller commits)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts in {MIGRATIONS_DIR}")
    return head


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> str | None:
    """Upgrade the database to `revision` (default: the latest); returns the revision it is at
    afterwards. Safe to call from several processes at once, and a no-op when already there."""
    with _engine(engine_or_url) as engine, engine.connect() as conn, migration_lock(conn):
        _adopt_unversioned(conn)
        command.upgrade(alembic_config(conn), revision)
        conn.commit()
        return _current(conn)


def current(engine: Engine | str) -> str | None:
    """The revision the database is at; None for a database no migration has touched."""
    with _engine(engine) as owned, owned.connect() as conn:
        return _current(conn)


@contextlib.contextmanager
def migration_lock(conn: Connection) -> Iterator[None]:
    """Hold the schema-migration lock on `conn`, with no transaction open on entry to the body
    on PostgreSQL (the lock is the session's) and a write transaction open on SQLite."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        conn.commit()
        try:
            yield
        except BaseException:
            # A dead connection has dropped the lock with its session already.
            with contextlib.suppress(SQLAlchemyError):
                conn.rollback()
                _advisory_unlock(conn)
            raise
        _advisory_unlock(conn)
    elif dialect == "sqlite":
        # pysqlite opens transactions lazily and never for DDL: take SQLite's write lock now,
        # so the whole upgrade is one transaction and a second migrator waits (busy_timeout).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(SQLAlchemyError):
                conn.rollback()
            raise
        conn.commit()
    else:
        yield


def _advisory_unlock(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
    conn.commit()


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _adopt_unversioned(conn: Connection) -> None:
    if _current(conn) is not None:
        return
    existing = set(inspect(conn).get_table_names()) & set(_BASELINE_COLUMNS)
    if not existing:
        return
    shapes = {
        table: frozenset(c["name"] for c in inspect(conn).get_columns(table)) for table in existing
    }
    if shapes != _BASELINE_COLUMNS:
        found = {table: sorted(columns) for table, columns in sorted(shapes.items())}
        raise SchemaNotManaged(
            "the database has tables that no migration created and that do not match revision "
            f"{BASELINE_REVISION} (found {found}); migrate it by hand and `alembic stamp` it, "
            "or start from an empty database"
        )
    command.stamp(alembic_config(conn), BASELINE_REVISION)


@contextlib.contextmanager
def _engine(engine_or_url: Engine | str) -> Iterator[Engine]:
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = create_sql_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dal.sql.migrate",
        description="Upgrade the job/key store schema and print the revision it is at.",
    )
    parser.add_argument("--url", help="SQLAlchemy database URL (default: $DATABASE_URL)")
    parser.add_argument("--revision", default="head", help="target revision (default: head)")
    args = parser.parse_args(argv)
    url = args.url or os.environ.get("DATABASE_URL")
    if not url:
        parser.error("no database: pass --url or set DATABASE_URL")
    try:
        revision = upgrade(url, args.revision)
    except SQLAlchemyError as exc:
        target = make_url(url).render_as_string(hide_password=True)
        print(f"migration of {target} failed: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(revision or "base")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
