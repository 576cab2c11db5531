"""Alembic revision scripts, one per schema change (loaded by Alembic, never imported)."""
