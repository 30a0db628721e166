"""segments, tags, scores

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:56:04.577969
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "condition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("applies_tag", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_segments_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("program_id", "key", name=op.f("uq_segments_program_id")),
    )
    op.create_table(
        "member_tags",
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_tags_member_id_members")),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_member_tags_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("member_id", "key", "source", name=op.f("pk_member_tags")),
    )
    with op.batch_alter_table("member_tags", schema=None) as batch_op:
        batch_op.create_index("ix_member_tags_program_key", ["program_id", "key", "member_id"], unique=False)

    op.create_table(
        "segment_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("segment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_segment_changes_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_segment_changes_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_changes_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_changes")),
    )
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.create_index("ix_segment_changes_member", ["member_id", "id"], unique=False)
        batch_op.create_index("ix_segment_changes_segment_at", ["segment_id", "at"], unique=False)

    op.create_table(
        "segment_memberships",
        sa.Column("segment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_segment_memberships_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_memberships_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "member_id", name=op.f("pk_segment_memberships")),
    )
    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.create_index("ix_segment_memberships_member", ["member_id"], unique=False)

    with op.batch_alter_table("event_aggregates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amount_count", sa.Integer(), nullable=False, server_default="0"))
    # Events recorded before this revision: assume each counted event had an amount.
    op.execute("UPDATE event_aggregates SET amount_count = count WHERE amount_min IS NOT NULL")

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rfm_r", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rfm_f", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rfm_m", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rfm_label", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("abc_class", sa.String(length=1), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("abc_class")
        batch_op.drop_column("rfm_label")
        batch_op.drop_column("rfm_m")
        batch_op.drop_column("rfm_f")
        batch_op.drop_column("rfm_r")

    with op.batch_alter_table("event_aggregates", schema=None) as batch_op:
        batch_op.drop_column("amount_count")

    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_memberships_member")

    op.drop_table("segment_memberships")
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_changes_segment_at")
        batch_op.drop_index("ix_segment_changes_member")

    op.drop_table("segment_changes")
    with op.batch_alter_table("member_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_member_tags_program_key")

    op.drop_table("member_tags")
    op.drop_table("segments")
