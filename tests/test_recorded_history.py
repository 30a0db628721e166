"""Migration 0011 records the history exactly as `fill_conversions` does, on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Date, Integer, String, column, insert, select, table, text

import migrations
from domain.analytics.recording import fill_conversions
from domain.db.engine import Database, create_engine
from domain.db.types import Json, UtcDateTime
from tests.support.backends import PG_HOST, PG_PORT, RUN_ID, create_pg_database, drop_pg_database, reachable

AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
changes = table(
    "segment_changes",
    column("program_id", Integer()),
    column("segment_id", Integer()),
    column("member_id", Integer()),
    column("change", String()),
    column("at", UtcDateTime()),
)
messages = table(
    "messages",
    column("program_id", Integer()),
    column("member_id", Integer()),
    column("segment_id", Integer()),
    column("segment_key", String()),
    column("channel", String()),
    column("template", String()),
    column("status", String()),
    column("created_at", UtcDateTime()),
)
events = table(
    "events",
    column("program_id", Integer()),
    column("external_id", String()),
    column("member_id", Integer()),
    column("type", String()),
    column("occurred_at", UtcDateTime()),
    column("properties", Json),
    column("status", String()),
    column("points_awarded", Integer()),
    column("content_hash", String()),
    column("received_at", UtcDateTime()),
)
buckets = table(
    "event_aggregates",
    column("member_id", Integer()),
    column("event_type", String()),
    column("day", Date()),
    column("program_id", Integer()),
    column("count", Integer()),
    column("amount_count", Integer()),
    column("amount_sum", Integer()),
    column("first_at", UtcDateTime()),
    column("last_at", UtcDateTime()),
)


async def _history(url: str) -> tuple[list[Any], list[Any]]:
    """At revision 0010: entries and messages around purchase buckets and reactions; then upgrade
    and read what the migration stored; then recompute with fill_conversions and read again."""
    db = Database(create_engine(url, pool_size=1))
    try:
        async with db.unit_of_work() as uow:
            session = uow.session
            await session.execute(
                text(
                    "INSERT INTO programs (key, name, kind, settings, created_at)"
                    " VALUES ('h', 'H', 'B2C', '{}', :now)"
                ),
                {"now": AT},
            )
            program_id = await session.scalar(text("SELECT id FROM programs WHERE key = 'h'"))
            for name in ("a", "b"):
                await session.execute(
                    text(
                        "INSERT INTO members (program_id, external_id, kind, attributes, channels, joined_at,"
                        " created_at, updated_at, points_balance, pending_points)"
                        " VALUES (:p, :m, 'CUSTOMER', '{}', '[]', :now, :now, :now, 0, 0)"
                    ),
                    {"p": program_id, "m": name, "now": AT},
                )
            found = (await session.execute(text("SELECT external_id, id FROM members"))).all()
            ids: dict[str, int] = {str(name): int(id_) for name, id_ in found}
            await session.execute(
                text(
                    "INSERT INTO segments (program_id, key, name, kind, created_at, updated_at)"
                    " VALUES (:p, 's', 'S', 'STATIC', :now, :now)"
                ),
                {"p": program_id, "now": AT},
            )
            segment_id = await session.scalar(text("SELECT id FROM segments"))
            # purchases: a's on the entry's day after it, and three days later; b's the day before
            for member, first, last in (
                ("a", AT + timedelta(hours=2), AT + timedelta(hours=5)),
                ("a", AT + timedelta(days=3), AT + timedelta(days=3)),
                ("b", AT - timedelta(days=1), AT - timedelta(days=1)),
            ):
                await session.execute(
                    insert(buckets).values(
                        member_id=ids[member],
                        event_type="purchase",
                        day=first.date(),
                        program_id=program_id,
                        count=1,
                        amount_count=0,
                        amount_sum=0,
                        first_at=first,
                        last_at=last,
                    )
                )
            for member, at in (
                ("a", AT),
                ("a", AT + timedelta(hours=6)),
                ("b", AT),
                ("a", AT + timedelta(days=9)),
            ):
                await session.execute(
                    insert(changes).values(
                        program_id=program_id,
                        segment_id=segment_id,
                        member_id=ids[member],
                        change="ENTERED",
                        at=at,
                    )
                )
                await session.execute(
                    insert(messages).values(
                        program_id=program_id,
                        member_id=ids[member],
                        segment_id=segment_id,
                        segment_key="s",
                        channel="IN_APP",
                        template="welcome",
                        status="SENT",
                        created_at=at,
                    )
                )
            message_ids = list(await session.scalars(text("SELECT id FROM messages ORDER BY id")))
            # reactions: a opens the first message (id as a number) and clicks it (as text) before it
            for n, (kind, message_id, at) in enumerate(
                (
                    ("message_opened", message_ids[0], AT + timedelta(hours=1)),
                    ("message_clicked", str(message_ids[0]), AT - timedelta(hours=1)),
                    ("message_clicked", str(message_ids[1]), AT + timedelta(hours=7)),
                )
            ):
                await session.execute(
                    insert(events).values(
                        program_id=program_id,
                        external_id=f"x{n}",
                        member_id=ids["a"],
                        type=kind,
                        occurred_at=at,
                        properties={"messageId": message_id},
                        status="ACCEPTED",
                        points_awarded=0,
                        content_hash="h",
                        received_at=at,
                    )
                )
    finally:
        await db.dispose()
    await asyncio.to_thread(migrations.upgrade, url)
    db = Database(create_engine(url, pool_size=1))
    try:
        stored = await _read(db)
        async with db.unit_of_work() as uow:
            await fill_conversions(uow.session, program_id, everything=True)
        assert await _read(db) == stored
        return stored
    finally:
        await db.dispose()


async def _read(db: Database) -> tuple[list[Any], list[Any]]:
    async with db.read() as session:
        entries = (
            await session.execute(
                select(changes.c.at, column("first_goal_at", UtcDateTime()), column("goal_known"))
                .select_from(changes)
                .order_by(text("id"))
            )
        ).all()
        sent = (
            await session.execute(
                select(
                    messages.c.created_at,
                    column("first_goal_at", UtcDateTime()),
                    column("opened"),
                    column("clicked"),
                    column("stats_known"),
                )
                .select_from(messages)
                .order_by(text("id"))
            )
        ).all()
    return [tuple(row) for row in entries], [tuple(row) for row in sent]


def _check(url: str) -> None:
    migrations.upgrade(url, "0010")
    entries, sent = asyncio.run(_history(url))
    first = AT + timedelta(hours=2)
    later = AT + timedelta(days=3)
    assert [(at, goal, bool(known)) for at, goal, known in entries] == [
        (AT, first, True),  # the same day's bucket, whose last purchase is after the entry
        (AT + timedelta(hours=6), later, True),  # after that day's last purchase: the next bucket
        (AT, None, True),  # b bought the day before only
        (AT + timedelta(days=9), None, True),
    ]
    assert [(goal, bool(o), bool(c), bool(k)) for _, goal, o, c, k in sent] == [
        (first, True, False, True),  # the click came before the message
        (later, False, True, True),
        (None, False, False, True),
        (None, False, False, True),
    ]


def test_sqlite_migration_records_the_history(tmp_path: Path) -> None:
    _check(f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")


@pytest.mark.skipif(not reachable(PG_HOST, PG_PORT), reason="PostgreSQL is not reachable at 127.0.0.1:5432")
def test_postgresql_migration_records_the_history() -> None:
    name = f"loyalty_history_{RUN_ID}"
    asyncio.run(create_pg_database(name))
    try:
        _check(f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}")
    finally:
        asyncio.run(drop_pg_database(name))
