"""Migration 0018 on data: on PostgreSQL events and segment_changes become monthly partitions holding
the same rows, an externalId stays unique across months, and a downgrade gives back the plain tables
with their unique key and foreign keys; on SQLite it changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

import migrations
from tests.support.migrated import database_url

__all__ = ["database_url"]  # the scratch database fixture

T = "2026-01-01 00:00:00+00"
SEED = [
    f"INSERT INTO programs (id, key, name, kind, settings, created_at) VALUES (1, 'old', 'Old', 'B2C', '{{}}', '{T}')",
    "INSERT INTO members (id, program_id, external_id, kind, attributes, channels, joined_at, created_at, "
    f"updated_at, points_balance, pending_points) VALUES (1, 1, 'm1', 'CUSTOMER', '{{}}', '[]', '{T}', '{T}', '{T}', 20, 0)",
    f"INSERT INTO segments (id, program_id, key, name, kind, created_at, updated_at) "
    f"VALUES (1, 1, 'vip', 'VIP', 'STATIC', '{T}', '{T}')",
    *(
        "INSERT INTO events (id, program_id, external_id, member_id, type, occurred_at, amount, properties, "
        f"status, points_awarded, content_hash, received_at) VALUES ({i}, 1, 'e{i}', 1, 'purchase', '{at}', "
        f"100000, '{{}}', 'ACCEPTED', 10, 'h{i}', '{at}')"
        for i, at in ((1, "2026-01-15 10:00:00+00"), (2, "2026-11-20 10:00:00+00"))
    ),
    *(
        "INSERT INTO ledger_entries (id, program_id, member_id, points, status, kind, reason, event_id, "
        f"idempotency_key, request_hash, created_at) VALUES ({i}, 1, 1, 10, 'POSTED', 'ACCRUAL', 'purchase', "
        f"{i}, 'event:e{i}', 'r{i}', '{T}')"
        for i in (1, 2)
    ),
    *(
        f"INSERT INTO segment_changes (id, program_id, segment_id, member_id, change, at) "
        f"VALUES ({i}, 1, 1, 1, 'ENTERED', '{at}')"
        for i, at in ((1, "2026-02-01 00:00:00+00"), (2, "2026-12-01 00:00:00+00"))
    ),
]
ROWS = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM segment_changes), (SELECT sum(points) FROM ledger_entries)"
#: Another event with e1's externalId, in another month.
DUPLICATE = (
    "INSERT INTO events (program_id, external_id, member_id, type, occurred_at, properties, status, "
    "points_awarded, content_hash, received_at) VALUES (1, 'e1', 1, 'visit', '2026-06-01 00:00:00+00', '{}', "
    "'ACCEPTED', 0, 'other', '2026-06-01 00:00:00+00') ON CONFLICT DO NOTHING RETURNING id"
)
PLACES = "SELECT external_id, tableoid::regclass::text FROM events ORDER BY external_id"
KINDS = "SELECT relname, relkind::text FROM pg_class WHERE relname IN ('events', 'segment_changes') ORDER BY relname"
SEQUENCES = "SELECT pg_get_serial_sequence('events', 'id'), pg_get_serial_sequence('segment_changes', 'id')"
INVALID = "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
INBOUND = "SELECT conname FROM pg_constraint WHERE confrelid = 'events'::regclass ORDER BY conname"


def _run(url: str, *statements: str) -> list[Any]:
    """Run the statements in one transaction; the rows of the last."""

    async def run() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                result = None
                for statement in statements:
                    result = await connection.execute(text(statement))
                return [tuple(r) for r in result] if result is not None and result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_history_keeps_its_rows_both_ways_and_an_external_id_stays_unique(database_url: str) -> None:
    # given a database at 0017 with two events, their ledger entries and two segment changes,
    # months apart
    migrations.upgrade(database_url, "0017")
    _run(database_url, *SEED)
    before = _run(database_url, ROWS)
    postgresql = database_url.startswith("postgresql")

    # when it is migrated to 0018
    migrations.upgrade(database_url, "0018")

    # then it holds the same rows; on PostgreSQL in the partitions of their months, with e1's
    # externalId claimed for every month and no foreign key left into events
    assert _run(database_url, ROWS) == before
    if postgresql:
        assert _run(database_url, KINDS) == [("events", "p"), ("segment_changes", "p")]
        assert _run(database_url, PLACES) == [("e1", "events_y2026m01"), ("e2", "events_y2026m11")]
        assert _run(database_url, DUPLICATE) == []
        assert _run(database_url, INBOUND) == []
        assert _run(database_url, INVALID) == []
        assert _run(database_url, "SELECT count(*) FROM event_keys") == [(2,)]
        # the ids still come from the sequences, owned by the new tables
        assert _run(database_url, SEQUENCES) == [("public.events_id_seq", "public.segment_changes_id_seq")]
    else:
        with pytest.raises(IntegrityError):
            _run(database_url, DUPLICATE.replace(" ON CONFLICT DO NOTHING RETURNING id", ""))

    # when it is downgraded again
    migrations.downgrade(database_url, "0017")

    # then the plain tables hold the same rows, with their unique key and foreign keys back
    assert _run(database_url, ROWS) == before
    with pytest.raises(IntegrityError):
        _run(database_url, DUPLICATE.replace(" ON CONFLICT DO NOTHING RETURNING id", ""))
    if postgresql:
        assert _run(database_url, KINDS) == [("events", "r"), ("segment_changes", "r")]
        assert _run(database_url, INVALID) == []
        assert _run(database_url, INBOUND) == [
            ("fk_fraud_findings_event_id_events",),
            ("fk_ledger_entries_event_id_events",),
        ]
        assert _run(database_url, SEQUENCES) == [("public.events_id_seq", "public.segment_changes_id_seq")]
