"""How SqlJobStore runs a statement inside a connection or transaction it holds: the port
between the store's logic and the two ways it executes SQL.

- `SqlAlchemyStatements` runs each statement through SQLAlchemy's `Connection` (PostgreSQL, and
  any other backend SQLAlchemy speaks).
- `dal.sql.sqlite_direct` runs the same statements, compiled by SQLAlchemy for SQLite and
  converted by the columns' own SQLAlchemy types, on the pooled `sqlite3` connection itself
  (the embedded profile; see that module for why).

Either way a row comes back as a mapping from column name to a converted value, and a database
error surfaces as SQLAlchemy's exception for it (IntegrityError, OperationalError, ...), so the
store's logic and error handling are the same on every backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeAlias

from sqlalchemy import Connection, Executable

# A row, by column name (SQLAlchemy's RowMapping, or a dict).
Row: TypeAlias = Mapping[Any, Any]


class Statements(Protocol):
    """Runs statements in one connection (and its transaction, if one was begun)."""

    def first(self, statement: Executable, params: Mapping[str, Any]) -> Row | None:
        """The first row the statement returns, or None."""
        ...

    def all(self, statement: Executable, params: Mapping[str, Any]) -> list[Row]:
        """Every row the statement returns."""
        ...

    def each(self, statement: Executable, params: Mapping[str, Any]) -> Iterator[Row]:
        """The rows one at a time, converted as they are reached, for a caller that may stop
        early."""
        ...

    def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        """The first column of the one row the statement returns."""
        ...

    def run(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """Runs a statement whose rows, if any, are not wanted."""
        ...

    def run_sql(self, sql: str) -> None:
        """Runs SQL text with no parameters, as the driver receives it (BEGIN IMMEDIATE)."""
        ...


class SqlAlchemyStatements:
    """Statements run through a SQLAlchemy Connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def first(self, statement: Executable, params: Mapping[str, Any]) -> Row | None:
        return self._conn.execute(statement, params).mappings().first()

    def all(self, statement: Executable, params: Mapping[str, Any]) -> list[Row]:
        return list(self._conn.execute(statement, params).mappings().all())

    def each(self, statement: Executable, params: Mapping[str, Any]) -> Iterator[Row]:
        return iter(self._conn.execute(statement, params).mappings())

    def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        return self._conn.execute(statement, params).scalar_one()

    def run(self, statement: Executable, params: Mapping[str, Any]) -> None:
        self._conn.execute(statement, params)

    def run_sql(self, sql: str) -> None:
        self._conn.exec_driver_sql(sql)
