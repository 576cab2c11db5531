"""SQLAlchemy adapters: one code path for SQLite (embedded profile) and PostgreSQL (Cloud SQL)."""

from dal.sql.engine import create_sql_engine
from dal.sql.job_store import SqlJobStore
from dal.sql.key_store import SqlApiKeyStore
from dal.sql.schema import metadata

__all__ = ["SqlApiKeyStore", "SqlJobStore", "create_sql_engine", "metadata"]
