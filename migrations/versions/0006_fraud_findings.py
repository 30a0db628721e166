"""fraud findings, review decisions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 19:49:25.636922
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "fraud_findings",
        sa.Column("id", _ID, nullable=False),
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("member_id", _ID, nullable=False),
        sa.Column("ledger_entry_id", _ID, nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_fraud_findings_event_id_events")),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_fraud_findings_ledger_entry_id_ledger_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_fraud_findings_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_fraud_findings_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_findings")),
    )
    with op.batch_alter_table("fraud_findings", schema=None) as batch_op:
        batch_op.create_index("ix_fraud_findings_event", ["event_id"], unique=False)
        batch_op.create_index(
            "ix_fraud_findings_program_member_at", ["program_id", "member_id", "at"], unique=False
        )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_column("decision_reason")
    with op.batch_alter_table("fraud_findings", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_findings_program_member_at")
        batch_op.drop_index("ix_fraud_findings_event")
    op.drop_table("fraud_findings")
