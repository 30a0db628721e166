"""partitioned history: events and segment_changes become monthly range partitions on PostgreSQL

On PostgreSQL each table is rebuilt as a declaratively partitioned table (RANGE on its time
column: events.occurred_at, segment_changes.at) with one partition per month from its oldest
row's to three months ahead, and a DEFAULT partition; the rows are copied, the names swapped,
the indexes and outgoing foreign keys recreated (on every partition). The primary key becomes
(id, time column), as PostgreSQL requires. events' unique (program_id, external_id) is kept
exact across months by the `event_keys` claim table, filled by a BEFORE INSERT trigger that
skips an event whose key is claimed; a plain index on (program_id, external_id) serves the lookups
by externalId (duplicates, refunds). The foreign keys INTO events (ledger_entries.event_id,
fraud_findings.event_id) go: a partitioned table can be referenced only by a key including
its partition key, and `loyalty prune` drops event partitions the ledger still names
(docs/scaling.md, "Partitioned history"). Downgrade rebuilds the plain tables.

SQLite keeps plain tables: a no-op there.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 00:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: table -> its time column (the partition key)
TABLES = {"events": "occurred_at", "segment_changes": "at"}
AHEAD = 3
#: Foreign keys into the partitioned tables: (table, column, referred table, name)
INBOUND = [
    ("ledger_entries", "event_id", "events", "fk_ledger_entries_event_id_events"),
    ("fraud_findings", "event_id", "events", "fk_fraud_findings_event_id_events"),
]
#: The unique keys that only the plain tables hold: (table, name, columns)
UNIQUE = [("events", "uq_events_program_id", "program_id, external_id")]
#: What serves their lookups on the partitioned tables (by externalId: duplicates, refunds)
LOOKUPS = [("events", "ix_events_program_external", "program_id, external_id")]

CLAIM_FUNCTION = """
CREATE FUNCTION claim_event_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_keys (program_id, external_id, occurred_at)
    VALUES (NEW.program_id, NEW.external_id, NEW.occurred_at) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;  -- the key is another event's: skipped, as ON CONFLICT DO NOTHING skips it
    END IF;
    RETURN NEW;
END $$
"""


def _execute(sql: str) -> list[tuple[object, ...]]:
    result = op.get_bind().execute(text(sql))
    return [tuple(row) for row in result] if result.returns_rows else []


def _definitions(table: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The table's indexes that no constraint owns (CREATE INDEX statements) and its outgoing
    foreign keys (name, definition)."""
    indexes = _execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        f"WHERE i.indrelid = '{table}'::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1"
    )
    keys = _execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE conrelid = '{table}'::regclass AND contype = 'f' ORDER BY 1"
    )
    # a partitioned table's read `ON ONLY`: on the rebuilt table they are built whole
    return [str(d).replace(" ON ONLY ", " ON ", 1) for (d,) in indexes], [(str(n), str(d)) for n, d in keys]


def _months(table: str, column: str) -> list[datetime]:
    [(oldest,)] = _execute(f"SELECT min({column}) FROM {table}")
    now = datetime.now(UTC)
    first = oldest if isinstance(oldest, datetime) and oldest < now else now
    month = datetime(first.year, first.month, 1, tzinfo=UTC)
    last = (now.year * 12 + now.month - 1) + AHEAD
    months = []
    while month.year * 12 + month.month - 1 <= last:
        months.append(month)
        index = month.year * 12 + month.month
        month = datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return months


def _rebuild(table: str, column: str, partitioned: bool) -> None:
    """Copy the table into a new one (partitioned or plain), swap the names, recreate the rest."""
    indexes, keys = _definitions(table)
    new = f"{table}_rebuilt"
    layout = f" PARTITION BY RANGE ({column})" if partitioned else ""
    _execute(f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS){layout}")
    if partitioned:
        _execute(f"CREATE TABLE {table}_default PARTITION OF {new} DEFAULT")
        for month in _months(table, column):
            following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
            _execute(
                f"CREATE TABLE {table}_y{month.year:04d}m{month.month:02d} PARTITION OF {new} "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{following.isoformat()}')"
            )
    _execute(f"INSERT INTO {new} SELECT * FROM {table}")
    _execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
    _execute(f"DROP TABLE {table}")
    _execute(f"ALTER TABLE {new} RENAME TO {table}")
    _execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    key = f"id, {column}" if partitioned else "id"
    _execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({key})")
    for statement in indexes:
        _execute(statement)
    for name, definition in keys:
        _execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, _, _, name in INBOUND:
        _execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for table, time_column in TABLES.items():
        _rebuild(table, time_column, partitioned=True)
    for table, name, columns in LOOKUPS:
        _execute(f"CREATE INDEX {name} ON {table} ({columns})")
    _execute(
        "CREATE TABLE event_keys (program_id BIGINT NOT NULL, external_id VARCHAR(128) NOT NULL, "
        "occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "CONSTRAINT pk_event_keys PRIMARY KEY (program_id, external_id))"
    )
    _execute("INSERT INTO event_keys SELECT program_id, external_id, occurred_at FROM events")
    _execute(CLAIM_FUNCTION)
    _execute(
        "CREATE TRIGGER events_claim_key BEFORE INSERT ON events "
        "FOR EACH ROW EXECUTE FUNCTION claim_event_key()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _execute("DROP TRIGGER events_claim_key ON events")
    _execute("DROP FUNCTION claim_event_key()")
    _execute("DROP TABLE event_keys")
    for _, name, _ in LOOKUPS:
        _execute(f"DROP INDEX {name}")
    for table, time_column in TABLES.items():
        _rebuild(table, time_column, partitioned=False)
    for table, name, columns in UNIQUE:
        _execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE ({columns})")
    for table, column, referred, name in INBOUND:
        _execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}) REFERENCES {referred} (id)"
        )
