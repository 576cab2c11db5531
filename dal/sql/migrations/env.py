"""Alembic environment for the SQL stores.

Two ways in:

* `dal.sql.migrate.upgrade()` (the service, tests, `python -m dal.sql.migrate`) configures
  Alembic in code and hands over an open connection in `config.attributes["connection"]`; it
  holds the migration lock and commits.
* The `alembic` command with the repository's alembic.ini (developers: `alembic revision
  --autogenerate -m "..."`, `alembic upgrade head`): the URL comes from `-x url=...`, else the
  DATABASE_URL environment variable.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection

from dal.sql.engine import create_sql_engine
from dal.sql.schema import metadata

config = context.config
target_metadata = metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    # Only for the alembic command: an application's logging is its own business.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise CommandError(
            "no database URL: set DATABASE_URL or pass -x url=... "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/txt2img)"
        )
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: autogenerate writes batch operations for it.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the DDL instead of running it."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        # dal.sql.migrate: the caller owns the connection, its transaction and its lock.
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    # The alembic command: take the same lock as the service's own migrations.
    from dal.sql.migrate import migration_lock

    engine = create_sql_engine(_database_url())
    try:
        with engine.connect() as conn, migration_lock(conn):
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
