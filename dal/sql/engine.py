from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool


def create_sql_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine tuned for this service's use: many short transactions from a few threads."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True, future=True)

    in_memory = not parsed.database or parsed.database == ":memory:"
    if not in_memory:
        Path(str(parsed.database)).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        # The API's threadpool and the inline worker share the engine.
        connect_args={"check_same_thread": False, "timeout": 30},
        # An in-memory database lives in one connection: share it, or every checkout is empty.
        poolclass=StaticPool if in_memory else None,
        future=True,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers (polling clients) proceed while the worker writes progress.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
