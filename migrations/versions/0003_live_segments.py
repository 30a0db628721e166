"""live segments: due times for time-driven flips, relay positions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("segments_due_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_members_segments_due_at", ["segments_due_at"])
    op.create_table(
        "relay_positions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_relay_positions")),
    )


def downgrade() -> None:
    op.drop_table("relay_positions")
    with op.batch_alter_table("members") as batch:
        batch.drop_index("ix_members_segments_due_at")
        batch.drop_column("segments_due_at")
