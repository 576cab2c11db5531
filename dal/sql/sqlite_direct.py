"""SqlJobStore's statements on SQLite, run on the pooled `sqlite3` connection itself.

Why: on the embedded profile a job makes three write transactions (record, claim, finish),
and SQLAlchemy's execution machinery around each one cost more than SQLite's own work. Timed
call by call against each other, the store's `claim` costs 425 us through `Connection` and
295 us here, `get` 255 us and 150 us; the same claim on a bare connection, about 90 us of it,
is SQLite's (issue 19, docs/performance.md, "An eighth round"). What is left out is the
`Connection` and its transaction object, the execution context and the `Result`.

What stays SQLAlchemy's, so that this is a second way to execute, not a second adapter:
- the statements: each is the store's own SQLAlchemy Core statement, compiled by SQLAlchemy
  for the engine's SQLite dialect (once per statement and set of parameter names);
- the values: each parameter goes through its bind's type's processor for the dialect and
  each returned column through its column type's result processor, the same functions
  SQLAlchemy's execution calls, so a row is stored and read back byte for byte as SQLAlchemy
  would (tests/integration/test_sqlite_direct.py compares the two);
- the connection: checked out of the engine's pool (its pragmas, its LIFO order, its reset
  on return), with the driver's own transaction handling, which is what SQLAlchemy's
  `begin()`/`commit()` reach on pysqlite too;
- the errors: a sqlite3 error is raised as SQLAlchemy's exception for it
  (`DBAPIError.instance`), so the store handles both paths' errors in one place.

A statement that needs more than that (Python-side column defaults, expanding IN, values
rendered at execution time) is refused when prepared, not run differently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from dal.sql.engine import write_lock
from dal.sql.statements import Row

Processor = Callable[[Any], Any]


class PreparedStatement:
    """One statement compiled for SQLite with one set of parameter names: its SQL, how to turn
    a parameters mapping into the driver's positional arguments, and how to turn a row into a
    mapping of converted values."""

    __slots__ = ("_columns", "_slots", "sql")

    def __init__(self, statement: Executable, names: frozenset[str], engine: Engine) -> None:
        dialect = engine.dialect
        if not isinstance(statement, ClauseElement):
            raise TypeError(f"not a SQLAlchemy statement: {statement!r}")
        compiled = statement.compile(dialect=dialect, column_keys=sorted(names))
        if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
            raise NotImplementedError(f"not a positional SQL statement: {statement}")
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.literal_execute_params
            or compiled.post_compile_params
        ):
            raise NotImplementedError(
                "a statement with Python-side defaults or values rendered at execution "
                f"time runs through SQLAlchemy's Connection: {statement}"
            )
        self.sql = compiled.string
        # Per positional argument: the parameter's name (None for a value the statement holds
        # itself, a literal), its bind processor, and the literal's value, converted once.
        slots: list[tuple[str | None, Processor | None, Any]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in names:
                slots.append((name, process, None))
            elif bind.required:
                raise KeyError(f"statement needs parameter {name!r}: {statement}")
            elif bind.callable is not None:
                # Its value is computed at each execution; converting it once would freeze it.
                raise NotImplementedError(f"a bind with a callable value: {statement}")
            else:
                value = bind.effective_value
                slots.append((None, None, process(value) if process is not None else value))
        self._slots = tuple(slots)
        self._columns = tuple(
            (column.name, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in getattr(statement, "exported_columns", ())
        )

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            value if name is None else (params[name] if process is None else process(params[name]))
            for name, process, value in self._slots
        )

    def mapping(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: value if process is None or value is None else process(value)
            for (name, process), value in zip(self._columns, row, strict=True)
        }


class DirectSqlite:
    """Connections and transactions on an SQLite engine's pool, whose statements run as
    `PreparedStatement`s (see the module's docstring)."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError(f"DirectSqlite runs on SQLite, not {engine.dialect.name}")
        self._engine = engine
        self._prepared: dict[tuple[Executable, frozenset[str]], PreparedStatement] = {}

    def prepared(self, statement: Executable, params: Mapping[str, Any]) -> PreparedStatement:
        names = frozenset(params)
        key = (statement, names)
        found = self._prepared.get(key)
        if found is None:
            # Two threads may prepare the same statement at once; both results are the same.
            found = self._prepared[key] = PreparedStatement(statement, names, self._engine)
        return found

    def _checkout(self) -> PoolProxiedConnection:
        """A connection from the pool. Unlike `Engine.connect()`, `raw_connection()` raises a
        failed connect (or its pragmas) as the driver's error; it is raised as SQLAlchemy's."""
        try:
            return self._engine.raw_connection()
        except sqlite3.Error as exc:
            raise _translated(exc, None, None) from exc

    @contextmanager
    def connect(self) -> Iterator[DirectStatements]:
        """A pooled connection for reads; the pool's reset ends whatever it began."""
        pooled = self._checkout()
        try:
            cursor = pooled.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                yield DirectStatements(cursor, self)
            finally:
                cursor.close()
        finally:
            pooled.close()

    @contextmanager
    def begin(self) -> Iterator[DirectStatements]:
        """A write transaction: committed when the block ends, rolled back if it raises.
        Writers of this process queue on `write_lock` first, as `engine.begin()`'s do."""
        with write_lock(self._engine):
            pooled = self._checkout()
            try:
                driver: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
                cursor = driver.cursor()
                try:
                    yield DirectStatements(cursor, self)
                    _translating(driver.commit, "COMMIT")
                except BaseException:
                    _rollback(driver)
                    raise
                finally:
                    cursor.close()
            finally:
                pooled.close()


class DirectStatements:
    """`dal.sql.statements.Statements` on one sqlite3 cursor."""

    __slots__ = ("_cursor", "_direct")

    def __init__(self, cursor: sqlite3.Cursor, direct: DirectSqlite) -> None:
        self._cursor = cursor
        self._direct = direct

    def _execute(
        self, statement: Executable, params: Mapping[str, Any]
    ) -> tuple[PreparedStatement, list[Any]]:
        prepared = self._direct.prepared(statement, params)
        arguments = prepared.arguments(params)
        try:
            self._cursor.execute(prepared.sql, arguments)
            # Every row is fetched, so the statement has finished (an UPDATE ... RETURNING
            # included) before anything else runs on the connection.
            rows = self._cursor.fetchall()
        except sqlite3.Error as exc:
            raise _translated(exc, prepared.sql, arguments) from exc
        return prepared, rows

    def first(self, statement: Executable, params: Mapping[str, Any]) -> Row | None:
        prepared, rows = self._execute(statement, params)
        return prepared.mapping(rows[0]) if rows else None

    def all(self, statement: Executable, params: Mapping[str, Any]) -> list[Row]:
        prepared, rows = self._execute(statement, params)
        return [prepared.mapping(row) for row in rows]

    def each(self, statement: Executable, params: Mapping[str, Any]) -> Iterator[Row]:
        prepared = self._direct.prepared(statement, params)
        arguments = prepared.arguments(params)
        try:
            self._cursor.execute(prepared.sql, arguments)
            while (row := self._cursor.fetchone()) is not None:
                yield prepared.mapping(row)
        except sqlite3.Error as exc:
            raise _translated(exc, prepared.sql, arguments) from exc

    def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        prepared, rows = self._execute(statement, params)
        (row,) = rows
        return next(iter(prepared.mapping(row).values()))

    def run(self, statement: Executable, params: Mapping[str, Any]) -> None:
        self._execute(statement, params)

    def run_sql(self, sql: str) -> None:
        _translating(lambda: self._cursor.execute(sql), sql)


def _translated(exc: sqlite3.Error, sql: str | None, arguments: Any) -> BaseException:
    """SQLAlchemy's exception for a sqlite3 error (IntegrityError, OperationalError, ...)."""
    return DBAPIError.instance(sql, arguments, exc, sqlite3.Error)


def _translating(call: Callable[[], object], sql: str) -> None:
    try:
        call()
    except sqlite3.Error as exc:
        raise _translated(exc, sql, ()) from exc


def _rollback(driver: sqlite3.Connection) -> None:
    """Rolls back after an error; the error being raised is the one that matters, and the
    pool's reset rolls back again (or discards the connection) when it is returned."""
    with suppress(sqlite3.Error):
        driver.rollback()
