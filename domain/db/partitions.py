"""Monthly range partitions of the history tables on PostgreSQL (docs/scaling.md, "Partitioned history").

`events` (by occurred_at) and `segment_changes` (by at) are declaratively partitioned
by UTC month on PostgreSQL since migration 0018; SQLite keeps plain tables. Each table
has a DEFAULT partition, so no insert ever fails for lack of a month: a backdated
event older than the first month, or one of a month not yet created, lands there.
`ensure_months` creates the months from the current one to `AHEAD` months ahead (the
scheduler's loop calls it, docs/operations.md, "Partitions"); creating a month whose
rows are in the DEFAULT partition moves them out first.

Uniqueness across months: PostgreSQL requires a partitioned table's unique keys to
include the partition key, so events' (program_id, external_id) is kept exact by
`event_keys`, an unpartitioned claim table a BEFORE INSERT trigger fills: an event
whose key is claimed is skipped, as `ON CONFLICT DO NOTHING` skipped it before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class PartitionedTable:
    name: str
    #: The time column windows and retention read: the partition key.
    column: str


EVENTS = PartitionedTable("events", "occurred_at")
SEGMENT_CHANGES = PartitionedTable("segment_changes", "at")
PARTITIONED = (EVENTS, SEGMENT_CHANGES)
BY_NAME = {t.name: t for t in PARTITIONED}

#: Months created ahead of the current one.
AHEAD = 3
#: The claim table that keeps events' (program_id, external_id) unique across months.
EVENT_KEYS = "event_keys"
#: Indexes only the partitioned tables have: what served their lookups was a unique key (migration 0018).
PARTITIONED_ONLY_INDEXES = frozenset({"ix_events_program_external"})
#: Serialises partition upkeep and prune across processes (a transaction-scoped advisory lock).
UPKEEP_LOCK = 7_204_918_020

_PARTITION = re.compile(r"^(?P<table>[a-z_]+)_(?:y(?P<year>\d{4})m(?P<month>\d{2})|default)$")


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: PartitionedTable, month: datetime) -> str:
    return f"{table.name}_y{month.year:04d}m{month.month:02d}"


def default_partition(table: PartitionedTable) -> str:
    return f"{table.name}_default"


def month_of(name: str) -> datetime | None:
    """The month a partition holds (None: the DEFAULT partition or not a partition's name)."""
    found = _PARTITION.match(name)
    if found is None or found["year"] is None:
        return None
    return datetime(int(found["year"]), int(found["month"]), 1, tzinfo=UTC)


def is_partition(name: str) -> bool:
    found = _PARTITION.match(name)
    return found is not None and found["table"] in BY_NAME


def month_statements(table: PartitionedTable, month: datetime) -> list[str]:
    """Create the month's partition, moving its rows out of the DEFAULT partition first (PostgreSQL
    refuses to attach a range the DEFAULT partition holds rows of)."""
    name, default = partition_name(table, month), default_partition(table)
    low, high = month.isoformat(), add_months(month, 1).isoformat()
    within = f"{table.column} >= '{low}' AND {table.column} < '{high}'"
    return [
        f"CREATE TABLE {name} (LIKE {table.name} INCLUDING DEFAULTS)",
        f"WITH moved AS (DELETE FROM {default} WHERE {within} RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved",
        f"ALTER TABLE {table.name} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')",
    ]


async def partitions_of(session: AsyncSession, table: PartitionedTable) -> list[str]:
    """The names of the table's partitions (empty: the table is not partitioned)."""
    rows = await session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table ORDER BY c.relname"
        ),
        {"table": table.name},
    )
    return [name for (name,) in rows]


async def ensure_months(session: AsyncSession, now: datetime, ahead: int = AHEAD) -> list[str]:
    """Create the partitions of the current month and the `ahead` next ones that are missing; returns
    their names. PostgreSQL only; a no-op where the tables are not partitioned."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPKEEP_LOCK})
    created: list[str] = []
    for table in PARTITIONED:
        existing = set(await partitions_of(session, table))
        if not existing:
            continue
        for offset in range(ahead + 1):
            month = add_months(month_start(now), offset)
            if partition_name(table, month) not in existing:
                for statement in month_statements(table, month):
                    await session.execute(text(statement))
                created.append(partition_name(table, month))
    return created


def include_in_comparison(obj: Any, name: str | None, type_: str, reflected: bool) -> bool:
    """Whether `alembic check` compares an object on PostgreSQL: not the partitions and the claim
    table (no model has them), nor what partitioning replaced (events' unique key, the foreign keys
    into partitioned tables: docs/scaling.md, "Partitioned history")."""
    if type_ == "table":
        return not (reflected and name is not None and (is_partition(name) or name == EVENT_KEYS))
    if type_ == "index" and reflected and name in PARTITIONED_ONLY_INDEXES:
        return False
    if type_ == "unique_constraint":
        return obj.table.name not in BY_NAME
    if type_ == "foreign_key_constraint":
        return obj.referred_table.name not in BY_NAME
    return True
