"""Outbox marker, webhooks, and an index for per-owner quotas.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

- jobs.enqueued_at: set when the job's message was handed to the queue; a sweeper republishes
  queued jobs that never got one (the API died between the insert and the publish).
- jobs.webhook_url and jobs.webhook_deliveries: where to POST the outcome, and a record of
  every delivery attempt.
- ix_jobs_owner_status: counting an owner's jobs in flight for the quota.

Jobs that existed before this revision get enqueued_at = created_at: they were published by
the code of their time (or visibly failed), so the sweeper must not send them again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("webhook_deliveries", sa.JSON(), nullable=False, server_default="[]")
        )
    op.execute("UPDATE jobs SET enqueued_at = created_at")
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_deliveries")
        batch.drop_column("webhook_url")
        batch.drop_column("enqueued_at")
