"""roles, erasure and the audit log: admin_users.role (existing admins become OWNER),
members.erased_at, messages.channel nullable (consent) and audit_log

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 17:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # The server default places every existing admin as OWNER, then goes: new admins name a role.
    with op.batch_alter_table("admin_users") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="OWNER"))
    with op.batch_alter_table("admin_users") as batch:
        batch.alter_column("role", server_default=None)
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    # A SUPPRESSED message (consent: the member accepted no channel) has no channel.
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("channel", existing_type=sa.String(16), nullable=True)
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("program_id", BigId, sa.ForeignKey("programs.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(260), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("before", Json, nullable=True),
        sa.Column("after", Json, nullable=True),
    )
    op.create_index("ix_audit_log_program", "audit_log", ["program_id", "id"])
    op.create_index("ix_audit_log_actor", "audit_log", ["program_id", "actor", "id"])
    op.create_index("ix_audit_log_action", "audit_log", ["program_id", "action", "id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("erased_at")
    op.execute("DELETE FROM messages WHERE channel IS NULL")
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("channel", existing_type=sa.String(16), nullable=False)
    with op.batch_alter_table("admin_users") as batch:
        batch.drop_column("role")
