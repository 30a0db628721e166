"""organization hierarchy: organizations.parent_id names the organization above (null at the top)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 14:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(
            sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch.create_foreign_key("fk_organizations_parent", "organizations", ["parent_id"], ["id"])
        batch.create_index("ix_organizations_parent", ["parent_id"])


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_index("ix_organizations_parent")
        batch.drop_constraint("fk_organizations_parent", type_="foreignkey")
        batch.drop_column("parent_id")
