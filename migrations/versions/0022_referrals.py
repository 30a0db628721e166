"""referrals: members.referral_code (existing members get a random code), referral_programs and
referrals (issue 21, "Referrals"; docs/promotions.md)

Revision ID: 0022
Revises: 0017
Create Date: 2026-12-08 00:10:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
#: domain/referrals/codes.py's alphabet and length, frozen here as this revision wrote them.
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
_LENGTH = 10
_members = sa.table(
    "members", sa.column("id", _ID), sa.column("program_id", _ID), sa.column("referral_code", sa.String)
)


def _code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))


def upgrade() -> None:
    # a column and a unique index: neither rebuilds `members` on SQLite (a rebuild drops the table,
    # which its children's foreign keys refuse once they hold rows)
    op.add_column("members", sa.Column("referral_code", sa.String(length=16), nullable=True))
    connection = op.get_bind()
    # existing (unerased) members get a code now; erased members have none (a void code)
    rows = connection.execute(sa.text("SELECT id FROM members WHERE erased_at IS NULL ORDER BY id")).scalars()
    ids = list(rows)
    for start in range(0, len(ids), 1000):
        connection.execute(
            _members.update().where(_members.c.id == sa.bindparam("member_id")),
            [{"member_id": i, "referral_code": _code()} for i in ids[start : start + 1000]],
        )
    op.create_index("uq_members_referral_code", "members", ["program_id", "referral_code"], unique=True)
    op.create_table(
        "referral_programs",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("join_points", sa.BigInteger(), nullable=False),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False),
        sa.Column("wait_days", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_referral_programs_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_referral_programs")),
    )
    op.create_table(
        "referrals",
        sa.Column("id", _ID, nullable=False),
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("referrer_id", _ID, nullable=False),
        sa.Column("referred_id", _ID, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("findings", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("join_points", sa.BigInteger(), nullable=False),
        sa.Column("qualifying_event_id", _ID, nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_referrals_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"], ["members.id"], name=op.f("fk_referrals_referrer_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["referred_id"], ["members.id"], name=op.f("fk_referrals_referred_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("program_id", "referred_id", name=op.f("uq_referrals_referred_id")),
    )
    op.create_index("ix_referrals_referrer", "referrals", ["referrer_id", "created_at"])
    op.create_index("ix_referrals_due", "referrals", ["status", "due_at"])


def downgrade() -> None:
    op.drop_table("referrals")
    op.drop_table("referral_programs")
    op.drop_index("uq_members_referral_code", table_name="members")
    op.drop_column("members", "referral_code")  # SQLite 3.35+ drops a column in place
