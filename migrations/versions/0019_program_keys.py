"""program keys: every table that grows with members holds program_id in its primary key

The Citus plan (docs/scaling.md, "Distributing with Citus") distributes every table that grows
with members by `program_id`, and Citus needs the distribution column in every primary key and
unique key of such a table. This revision makes that true where it is cheap and safe now:

* `segment_memberships` and `leaderboard_snapshot_entries` get a `program_id` (backfilled from
  their segment and snapshot) and hold it in their primary keys;
* `event_aggregates`, `member_tiers`, `member_tags`, `challenge_completions` and
  `experiment_exposures` already had `program_id`: their primary keys now hold it too;
* `points_lots.entry_id` and `reward_redemptions.ledger_entry_id` stay unique per program
  (entry ids are unique anyway, so nothing that was allowed is refused).

`program_id` goes last in these keys, not first: the reads of these tables name a member, a
segment, a snapshot or a challenge without the program (facts, tags, tiers, analytics), and an
index led by `program_id` would serve none of them on one PostgreSQL (no skip scan), while Citus
needs the column in the key, not in front. Nothing is uniquer than before: the old key's columns
already identify a row, since member, segment and snapshot ids are unique over all programs.

Tables keyed by a surrogate `id` (members, events, the ledger, ...) keep `PRIMARY KEY (id)`: the
distribution step turns it into `(program_id, id)` (docs/scaling.md lists each).
A primary key is rebuilt under an ACCESS EXCLUSIVE lock: on a large `event_aggregates` this takes
as long as building its index once.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-08 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: table -> its primary key before, and after (program_id last: see the module's docstring)
PRIMARY_KEYS: dict[str, tuple[list[str], list[str]]] = {
    "segment_memberships": (["segment_id", "member_id"], ["segment_id", "member_id", "program_id"]),
    "leaderboard_snapshot_entries": (["snapshot_id", "rank"], ["snapshot_id", "rank", "program_id"]),
    "event_aggregates": (
        ["member_id", "event_type", "day"],
        ["member_id", "event_type", "day", "program_id"],
    ),
    "member_tiers": (["member_id"], ["member_id", "program_id"]),
    "member_tags": (["member_id", "key", "source"], ["member_id", "key", "source", "program_id"]),
    "challenge_completions": (
        ["challenge_id", "member_id", "period_start"],
        ["challenge_id", "member_id", "period_start", "program_id"],
    ),
    "experiment_exposures": (["experiment_id", "member_id"], ["experiment_id", "member_id", "program_id"]),
}
#: table gaining program_id -> (its parent table, the column naming the parent)
BACKFILLED = {
    "segment_memberships": ("segments", "segment_id"),
    "leaderboard_snapshot_entries": ("leaderboard_snapshots", "snapshot_id"),
}
#: table -> (unique key before: name, columns; after: name, columns)
UNIQUE_KEYS = {
    "points_lots": (
        ("uq_points_lots_entry_id", ["entry_id"]),
        ("uq_points_lots_program_entry", ["program_id", "entry_id"]),
    ),
    "reward_redemptions": (
        ("uq_reward_redemptions_ledger_entry_id", ["ledger_entry_id"]),
        ("uq_reward_redemptions_program_entry", ["program_id", "ledger_entry_id"]),
    ),
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _rekey(table: str, columns: list[str]) -> None:
    name = f"pk_{table}"
    if _sqlite():  # SQLite cannot alter a primary key: batch mode copies the table
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.drop_constraint(name, type_="primary")
            batch.create_primary_key(name, columns)
    else:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} PRIMARY KEY ({', '.join(columns)})"
        )


def _rekey_unique(table: str, old: tuple[str, list[str]], new: tuple[str, list[str]]) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(old[0], type_="unique")
        batch.create_unique_constraint(new[0], new[1])


def upgrade() -> None:
    for table, (parent, via) in BACKFILLED.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("program_id", ID, nullable=True))
        op.execute(
            f"UPDATE {table} SET program_id = (SELECT p.program_id FROM {parent} p WHERE p.id = {table}.{via})"
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("program_id", existing_type=ID, nullable=False)
            batch.create_foreign_key(f"fk_{table}_program_id_programs", "programs", ["program_id"], ["id"])
    for table, (_, after) in PRIMARY_KEYS.items():
        _rekey(table, after)
    for table, (old, new) in UNIQUE_KEYS.items():
        _rekey_unique(table, old, new)


def downgrade() -> None:
    for table, (old, new) in UNIQUE_KEYS.items():
        _rekey_unique(table, new, old)
    for table, (before, _) in PRIMARY_KEYS.items():
        _rekey(table, before)
    for table in BACKFILLED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_program_id_programs", type_="foreignkey")
            batch.drop_column("program_id")
