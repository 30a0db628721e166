"""churn model scores: members.churn_risk_7d / churn_scored_at, churn_models

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 21:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("churn_risk_7d", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("churn_scored_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "churn_models",
        sa.Column("id", _ID, nullable=False),
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("algorithm", sa.String(length=64), nullable=False),
        sa.Column("auc", sa.Float(), nullable=True),
        sa.Column("brier", sa.Float(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("positives", sa.Integer(), nullable=False),
        sa.Column("negatives", sa.Integer(), nullable=False),
        sa.Column("scored", sa.Integer(), nullable=False),
        sa.Column("report", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_churn_models_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_churn_models")),
    )
    with op.batch_alter_table("churn_models", schema=None) as batch_op:
        batch_op.create_index("ix_churn_models_program", ["program_id", "trained_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("churn_models", schema=None) as batch_op:
        batch_op.drop_index("ix_churn_models_program")
    op.drop_table("churn_models")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("churn_scored_at")
        batch_op.drop_column("churn_risk_7d")
