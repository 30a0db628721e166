"""coupons: coupon pools and their codes; a reward may issue a pool's code

The till's new scope coupons:redeem is given to every API key holding points:redeem (the
keys of tills), as 0017 did for its split scopes; downgrade takes it away again.

Revision ID: 0021
Revises: 0017
Create Date: 2026-12-08 00:00:00.000000
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
api_keys = sa.table("api_keys", sa.column("id", sa.BigInteger()), sa.column("scopes", Json))
TILL, COUPONS = "points:redeem", "coupons:redeem"


def _rewrite(change: Callable[[list[str]], list[str]]) -> None:
    connection = op.get_bind()
    for key_id, scopes in connection.execute(sa.select(api_keys.c.id, api_keys.c.scopes)).all():
        new = change(list(scopes or []))
        if new != scopes:
            connection.execute(api_keys.update().where(api_keys.c.id == key_id).values(scopes=new))


def _granted(scopes: list[str]) -> list[str]:
    return sorted([*scopes, COUPONS]) if TILL in scopes and COUPONS not in scopes else scopes


def _revoked(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s != COUPONS]


def upgrade() -> None:
    op.create_table(
        "coupon_pools",
        sa.Column("id", Id, nullable=False),
        sa.Column("program_id", Id, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("discount_kind", sa.String(length=16), nullable=False),
        sa.Column("discount_value", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name="fk_coupon_pools_program_id_programs"),
        sa.PrimaryKeyConstraint("id", name="pk_coupon_pools"),
        sa.UniqueConstraint("program_id", "key", name="uq_coupon_pools_program_id"),
    )
    op.create_table(
        "coupon_codes",
        sa.Column("id", Id, nullable=False),
        sa.Column("program_id", Id, nullable=False),
        sa.Column("pool_id", Id, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("member_id", Id, nullable=True),
        sa.Column("issue_key", sa.String(length=200), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redemption_key", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name="fk_coupon_codes_program_id_programs"),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["coupon_pools.id"], name="fk_coupon_codes_pool_id_coupon_pools"
        ),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name="fk_coupon_codes_member_id_members"),
        sa.PrimaryKeyConstraint("id", name="pk_coupon_codes"),
        sa.UniqueConstraint("program_id", "code", name="uq_coupon_codes_code"),
        sa.UniqueConstraint("program_id", "issue_key", name="uq_coupon_codes_issue_key"),
        sa.UniqueConstraint("program_id", "redemption_key", name="uq_coupon_codes_redemption_key"),
    )
    op.create_index("ix_coupon_codes_pool_status", "coupon_codes", ["pool_id", "status", "id"])
    op.create_index("ix_coupon_codes_member", "coupon_codes", ["member_id", "id"])
    with op.batch_alter_table("rewards") as batch:
        batch.add_column(sa.Column("coupon_pool_id", Id, nullable=True))
        batch.create_foreign_key(
            "fk_rewards_coupon_pool_id_coupon_pools", "coupon_pools", ["coupon_pool_id"], ["id"]
        )
    _rewrite(_granted)


def downgrade() -> None:
    _rewrite(_revoked)
    with op.batch_alter_table("rewards") as batch:
        batch.drop_constraint("fk_rewards_coupon_pool_id_coupon_pools", type_="foreignkey")
        batch.drop_column("coupon_pool_id")
    op.drop_index("ix_coupon_codes_member", table_name="coupon_codes")
    op.drop_index("ix_coupon_codes_pool_status", table_name="coupon_codes")
    op.drop_table("coupon_codes")
    op.drop_table("coupon_pools")
