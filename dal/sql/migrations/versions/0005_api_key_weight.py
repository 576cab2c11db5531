"""Per-key fair-share weight.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

- api_keys.weight: the key's share of the GPUs against other keys' jobs waiting at the same
  time (1 or more; 2 gets twice the hand-overs of 1). Existing keys get 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("weight", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("weight")
