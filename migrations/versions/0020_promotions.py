"""promotions: conditional earning rules on top of the base one (docs/promotions.md), their
per-member usage (caps per period), and ledger_entries.promotions (which ones an accrual got)

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-07 23:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("program_id", BigId, sa.ForeignKey("programs.id"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("condition", Json, nullable=False),
        sa.Column("multiplier", sa.BigInteger(), nullable=True),
        sa.Column("bonus_points", sa.BigInteger(), nullable=False),
        sa.Column("starts_local", sa.String(19), nullable=True),
        sa.Column("ends_local", sa.String(19), nullable=True),
        sa.Column("cap_points", sa.BigInteger(), nullable=True),
        sa.Column("cap_period", sa.String(8), nullable=True),
        sa.Column("budget_points", sa.BigInteger(), nullable=True),
        sa.Column("spent_points", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("stacking", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("program_id", "key", name=op.f("uq_promotions_program_id")),
        sa.CheckConstraint(
            "budget_points IS NULL OR spent_points <= budget_points", name=op.f("ck_promotions_within_budget")
        ),
    )
    op.create_table(
        "promotion_usage",
        sa.Column(
            "promotion_id",
            BigId,
            sa.ForeignKey("promotions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("member_id", BigId, sa.ForeignKey("members.id"), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        sa.Column("program_id", BigId, sa.ForeignKey("programs.id"), primary_key=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("promotions", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("promotions")
    op.drop_table("promotion_usage")
    op.drop_table("promotions")
