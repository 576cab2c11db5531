from __future__ import annotations

import random
import sqlite3
import threading
import time
import weakref
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

# libpq connection parameters for PostgreSQL (psycopg, psycopg2), unless the URL's query sets
# them: give up on a server that does not answer within seconds (the stores then raise
# StoreUnavailable instead of hanging a request), and notice a peer that vanished mid-query.
POSTGRES_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    # ms that sent data may stay unacknowledged before the connection is dropped.
    "tcp_user_timeout": 30_000,
}
_LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2"})
# How long a connection waits for SQLite's locks: the busy handler's timeout, and the bound on
# retrying the switch to WAL, which SQLite refuses at once instead of waiting (below).
SQLITE_BUSY_TIMEOUT_S = 30.0


def create_sql_engine(url: str, *, echo: bool = False, connect_timeout_s: int = 5) -> Engine:
    """An engine tuned for this service's use: many short transactions from a few threads.

    PostgreSQL: connections are checked before use (a restarted server or a dropped connection
    costs a reconnect, not an error), a connection attempt gives up after `connect_timeout_s`
    (libpq's minimum is 2), and a request waits at most 10 s for a pooled connection."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return _postgres_engine(parsed, echo=echo, connect_timeout_s=connect_timeout_s)
    if backend != "sqlite":
        return create_engine(parsed, echo=echo, pool_pre_ping=True)

    in_memory = not parsed.database or parsed.database == ":memory:"
    if not in_memory:
        Path(str(parsed.database)).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    pool: dict[str, Any] = (
        # An in-memory database lives in one connection: share it, or every checkout is empty.
        {"poolclass": StaticPool}
        if in_memory
        # The API's threadpool (40 threads), held long polls and the inline workers all share
        # this engine; a pool smaller than that makes them queue for connections, not SQLite.
        # LIFO: the connection used last is handed out next. Each SQLite connection keeps its
        # own page cache, valid while no other connection has written since; handing them out
        # in turn made every transaction re-read its pages (about 40 preads per job, issue 19).
        else {"pool_size": 48, "max_overflow": 16, "pool_timeout": 30, "pool_use_lifo": True}
    )
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _enable_wal(cursor: Any) -> None:
    """Put the database in WAL mode, which lets readers (polling clients) proceed while the
    worker writes progress.

    WAL is a property of the database file, so only the first connection to a new database
    switches it. That switch needs an exclusive lock, and SQLite answers "database is locked"
    at once rather than through the busy handler when another connection holds the file at
    that moment: several processes opening a new database together (API instances migrating
    it at start) then fail. So the switch is retried, with a short random pause, for as long
    as the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter  # nosec B311


def _postgres_engine(url: URL, *, echo: bool, connect_timeout_s: int) -> Engine:
    connect_args: dict[str, Any] = {}
    if url.get_driver_name() in _LIBPQ_DRIVERS:
        defaults = {**POSTGRES_CONNECT_ARGS, "connect_timeout": connect_timeout_s}
        connect_args = {k: v for k, v in defaults.items() if k not in url.query}
    return create_engine(
        url,
        echo=echo,
        connect_args=connect_args,
        pool_pre_ping=True,
        # Per process: the API's threadpool plus a worker's progress writes. Keep
        # (pool_size + max_overflow) x processes under the server's max_connections.
        pool_size=10,
        max_overflow=30,
        # Waiting longer for a free connection than a client waits for an answer helps nobody.
        pool_timeout=10,
        # Cloud SQL and proxies drop idle connections; recycle before they do.
        pool_recycle=1800,
    )


_write_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_write_locks_guard = threading.Lock()


def write_lock(engine: Engine) -> AbstractContextManager[object]:
    """Serialises this process's write transactions on SQLite.

    SQLite admits one writer at a time; a second one waits in SQLite's busy handler, which
    sleeps in growing steps (up to 100 ms) instead of waking when the lock frees. Queuing
    writers on a Python lock instead keeps the embedded profile's latency flat under load.
    Other databases handle concurrent writers themselves.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    with _write_locks_guard:
        lock = _write_locks.get(engine)
        if lock is None:
            lock = _write_locks[engine] = threading.Lock()
    return lock
