"""rewards by segment: reward_segments lists the segments whose members may redeem a reward

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reward_segments",
        sa.Column("reward_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("segment_key", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("reward_id", "segment_key"),
    )
    op.create_index("ix_reward_segments_key", "reward_segments", ["segment_key"])


def downgrade() -> None:
    op.drop_index("ix_reward_segments_key", table_name="reward_segments")
    op.drop_table("reward_segments")
