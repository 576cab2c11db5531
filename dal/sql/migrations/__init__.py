"""Alembic migrations for the SQL job and key stores (see dal.sql.migrate)."""
