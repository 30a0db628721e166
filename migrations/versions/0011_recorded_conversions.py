"""recorded conversions: segment_changes.first_goal_at / goal_known, messages' reactions

The stored figures of domain/analytics/recording.py, filled here for the history (the rows
written before this revision); rows written later are recorded by the accrual pipeline.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of recording.py's statements (a migration does not import the domain).
_FIRST_GOAL = """(
  SELECT b.first_at FROM event_aggregates b
  WHERE b.member_id = {table}.member_id AND b.event_type = 'purchase'
    AND b.day >= {day} AND b.last_at > {table}.{at}
  ORDER BY b.day LIMIT 1)"""
_REACTED = """EXISTS (
  SELECT 1 FROM events e
  WHERE e.member_id = messages.member_id AND e.type = '{kind}' AND e.occurred_at >= messages.created_at
    AND {message_id} = CAST(messages.id AS VARCHAR))"""


def _day(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"date(timezone('UTC', {column}))"
    return f"date({column})"


def _message_id(dialect: str) -> str:
    if dialect == "postgresql":
        return "CAST((e.properties ->> 'messageId') AS VARCHAR)"
    return "CAST(JSON_EXTRACT(e.properties, '$.\"messageId\"') AS VARCHAR)"


def upgrade() -> None:
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_goal_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("goal_known", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_goal_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("opened", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("clicked", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("stats_known", sa.Boolean(), server_default=sa.false(), nullable=False))
    dialect = op.get_bind().dialect.name
    first_goal = _FIRST_GOAL.format(table="segment_changes", day=_day(dialect, "segment_changes.at"), at="at")
    op.execute(
        f"UPDATE segment_changes SET first_goal_at = {first_goal}, goal_known = true WHERE change = 'ENTERED'"
    )
    first_goal = _FIRST_GOAL.format(
        table="messages", day=_day(dialect, "messages.created_at"), at="created_at"
    )
    opened = _REACTED.format(kind="message_opened", message_id=_message_id(dialect))
    clicked = _REACTED.format(kind="message_clicked", message_id=_message_id(dialect))
    op.execute(
        f"UPDATE messages SET first_goal_at = {first_goal}, opened = {opened}, clicked = {clicked},"
        " stats_known = true"
    )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("stats_known")
        batch_op.drop_column("clicked")
        batch_op.drop_column("opened")
        batch_op.drop_column("first_goal_at")
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.drop_column("goal_known")
        batch_op.drop_column("first_goal_at")
