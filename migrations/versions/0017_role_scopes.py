"""role scopes: API keys keep their powers as program:write and segments:write split

Boards, challenges and rewards moved from program:write to the new marketing:write scope, webhook
endpoints and delivery retries from segments:write to the new webhooks:manage scope (so that the
MARKETER role can hold one without the other; domain/auth/roles.py). A key that held the old
scope gets the new one too. Downgrade takes the new scopes away again.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:40:00.000000
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
api_keys = sa.table("api_keys", sa.column("id", sa.BigInteger()), sa.column("scopes", Json))

#: (the scope a key held, the scope it now also needs for the same operations)
SPLITS = (("program:write", "marketing:write"), ("segments:write", "webhooks:manage"))


def _rewrite(change: Callable[[list[str]], list[str]]) -> None:
    connection = op.get_bind()
    for key_id, scopes in connection.execute(sa.select(api_keys.c.id, api_keys.c.scopes)).all():
        new = change(list(scopes or []))
        if new != scopes:
            connection.execute(api_keys.update().where(api_keys.c.id == key_id).values(scopes=new))


def _granted(scopes: list[str]) -> list[str]:
    added = [new for old, new in SPLITS if old in scopes and new not in scopes]
    return sorted(scopes + added)


def _revoked(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in {new for _, new in SPLITS}]


def upgrade() -> None:
    _rewrite(_granted)


def downgrade() -> None:
    _rewrite(_revoked)
