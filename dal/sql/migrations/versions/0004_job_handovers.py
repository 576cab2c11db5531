"""Job hand-overs by the sweeper.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

- jobs.handovers: how many times the sweeper handed the job to the queue again (its message
  was lost, or its worker died under a lapsed lease). Existing jobs get 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("handovers", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("handovers")
