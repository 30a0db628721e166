"""tier ladders: tier_ladders, member_tiers (segments of kind TIER need no schema change)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tier_ladders",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("qualifier", sa.String(length=1000), nullable=False),
        sa.Column("downgrade", sa.String(length=16), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("tiers", _JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_tier_ladders_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_tier_ladders")),
    )
    op.create_table(
        "member_tiers",
        sa.Column("member_id", _ID, nullable=False),
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("tier_key", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kept_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("highest_key", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_tiers_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_member_tiers_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_tiers")),
    )
    with op.batch_alter_table("member_tiers", schema=None) as batch_op:
        batch_op.create_index("ix_member_tiers_program_tier", ["program_id", "tier_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("member_tiers", schema=None) as batch_op:
        batch_op.drop_index("ix_member_tiers_program_tier")
    op.drop_table("member_tiers")
    op.drop_table("tier_ladders")
