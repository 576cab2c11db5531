"""The images a job counts against the daily quota, in an index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

- jobs.charged_images: a generated column, the job's num_images (1 when absent), or 0 for a
  job failed with enqueue_failed. SQLite: VIRTUAL, the only kind its ALTER TABLE can add; the
  index below stores its values. PostgreSQL: STORED (adding it rewrites the table), the only
  kind PostgreSQL can index. Existing jobs get their values as the column is added.
- ix_jobs_owner_created_charged on (owner, created_at, charged_images): the count of an
  owner's images since a moment (the daily images quota, in every admission) reads this index
  alone, where it used to read each of the owner's rows of the day and parse its JSON.

The expressions are spelled out here as the databases read them back, the same text as
dal/sql/schema.py's (tests/integration/test_migrations.py checks that they agree).

A later revision that makes batch mode recreate the jobs table on SQLite must leave
charged_images out of the rows it copies: a generated column cannot be written.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHARGED_IMAGES = {
    "sqlite": (
        "CASE WHEN status = 'failed' "
        "AND coalesce(json_extract(error, '$.code'), '') = 'enqueue_failed' THEN 0 "
        "ELSE coalesce(CAST(json_extract(params, '$.num_images') AS INTEGER), 1) END"
    ),
    "postgresql": (
        "CASE WHEN status = 'failed' "
        "AND coalesce(error ->> 'code', '') = 'enqueue_failed' THEN 0 "
        "ELSE coalesce((params ->> 'num_images')::integer, 1) END"
    ),
}


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect not in _CHARGED_IMAGES:
        raise NotImplementedError(f"revision 0006 supports SQLite and PostgreSQL, not {dialect}")
    generated = sa.Computed(sa.text(_CHARGED_IMAGES[dialect]), persisted=dialect != "sqlite")
    # persisted=False (VIRTUAL) also keeps batch mode on SQLite to a plain ALTER TABLE ADD.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("charged_images", sa.Integer(), generated, nullable=True))
    op.create_index(
        "ix_jobs_owner_created_charged", "jobs", ["owner", "created_at", "charged_images"]
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_created_charged", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("charged_images")
