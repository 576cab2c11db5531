"""SQLAlchemy adapters: one code path for SQLite (embedded profile) and PostgreSQL (Cloud SQL).

The statements, types and migrations are SQLAlchemy's on both. On SQLite the job store runs its
compiled statements on the pooled sqlite3 connection directly (sqlite_direct.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.sql.engine import create_sql_engine
from dal.sql.job_store import SqlJobStore
from dal.sql.key_store import SqlApiKeyStore
from dal.sql.schema import metadata

if TYPE_CHECKING:
    from dal.sql.migrate import upgrade

__all__ = ["SqlApiKeyStore", "SqlJobStore", "create_sql_engine", "metadata", "upgrade"]


def __getattr__(name: str) -> Any:
    # Alembic is imported on first use of `upgrade`, not by every importer of the stores.
    if name == "upgrade":
        from dal.sql.migrate import upgrade

        return upgrade
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
