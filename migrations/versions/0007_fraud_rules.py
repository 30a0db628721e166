"""fraud rules: receipts, device uses, per-program rule settings; ledger by event, reversals

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "fraud_receipts",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("receipt_id", sa.String(length=128), nullable=False),
        sa.Column("event_external_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", _ID, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_fraud_receipts_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_fraud_receipts_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", "receipt_id", name=op.f("pk_fraud_receipts")),
    )
    op.create_table(
        "fraud_devices",
        sa.Column("id", _ID, nullable=False),
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", _ID, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_fraud_devices_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_fraud_devices_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fraud_devices")),
    )
    with op.batch_alter_table("fraud_devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fraud_devices_program_device_at", ["program_id", "device_id", "occurred_at"], unique=False
        )
        batch_op.create_index("ix_fraud_devices_member", ["member_id", "device_id"], unique=False)
    op.create_table(
        "fraud_rule_settings",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_fraud_rule_settings_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", "rule", name=op.f("pk_fraud_rule_settings")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_event", ["event_id"], unique=False)
        batch_op.create_index(
            "ix_ledger_reversals",
            ["program_id", "idempotency_key"],
            unique=False,
            postgresql_where=sa.text("kind = 'REVERSAL'"),
            sqlite_where=sa.text("kind = 'REVERSAL'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_reversals")
        batch_op.drop_index("ix_ledger_event")
    op.drop_table("fraud_rule_settings")
    with op.batch_alter_table("fraud_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_devices_member")
        batch_op.drop_index("ix_fraud_devices_program_device_at")
    op.drop_table("fraud_devices")
    op.drop_table("fraud_receipts")
