"""Per-key quota overrides.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

- api_keys.max_in_flight, api_keys.images_per_day: NULL takes the service's default
  (QUOTA_MAX_IN_FLIGHT, QUOTA_IMAGES_PER_DAY), 0 is unlimited. Existing keys get NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_in_flight", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("images_per_day", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("images_per_day")
        batch.drop_column("max_in_flight")
