"""Set-based writes of the events of a batch (what posting writes is in domain/ledger/)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import orjson
from sqlalchemy import BigInteger, DateTime, Select, String, Table, Text, literal, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values, on_postgres, unnest
from domain.db.types import amount_to_units
from domain.enums import AccrualStatus, EventStatus
from domain.events.validation import ValidEvent
from domain.models import Event

#: `session.info` key of the organization trees' events `load_facts` read (segments' roll-ups):
#: stale once events are inserted.
ORG_TREES_CACHE = "loyalty.org_trees"


@dataclass(frozen=True)
class EventRow:
    event: ValidEvent
    member_id: int
    status: EventStatus
    #: The status of its ledger entry, when it earns points.
    entry_status: AccrualStatus
    points: int
    message: str | None


async def existing_event_hashes(
    session: AsyncSession, program_id: int, external_ids: Sequence[str]
) -> dict[str, str]:
    """The content hash of each of `external_ids` already recorded (one `= ANY` lookup on the unique key)."""
    if not external_ids:
        return {}
    rows = await session.execute(
        select(Event.external_id, Event.content_hash).where(
            Event.program_id == program_id, in_values(Event.external_id, external_ids, dialect_of(session))
        )
    )
    return {external_id: content_hash for external_id, content_hash in rows}  # noqa: C416 - rows are Row objects


async def insert_events(
    session: AsyncSession, program_id: int, rows: Sequence[EventRow], now: datetime
) -> dict[str, int]:
    """Insert in externalId order (a stable lock order), `ON CONFLICT DO NOTHING`; returns the ids of
    those that were new. One `unnest` statement on PostgreSQL, executemany on SQLite."""
    if not rows:
        return {}
    session.info.pop(ORG_TREES_CACHE, None)
    ordered = sorted(rows, key=lambda r: r.event.external_id)
    table = cast(Table, Event.__table__)
    if on_postgres(session):
        statement: Any = postgresql.insert(table).from_select(_COLUMNS, _unnested(program_id, ordered, now))
    else:
        statement = sqlite.insert(table)
    # no conflict target: on PostgreSQL the key is claimed in `event_keys` (domain/db/partitions.py)
    statement = statement.on_conflict_do_nothing().returning(table.c.id, table.c.external_id)
    if on_postgres(session):
        result = await session.execute(statement)
    else:
        result = await session.execute(statement, [_params(program_id, r, now) for r in ordered])
    return {external_id: event_id for event_id, external_id in result}


_COLUMNS = [
    "program_id",
    "external_id",
    "member_id",
    "type",
    "occurred_at",
    "amount",
    "properties",
    "status",
    "points_awarded",
    "message",
    "content_hash",
    "received_at",
]


def _points_awarded(row: EventRow) -> int:
    return row.points if row.status == EventStatus.ACCEPTED else 0


def _params(program_id: int, r: EventRow, now: datetime) -> dict[str, Any]:
    return {
        "program_id": program_id,
        "external_id": r.event.external_id,
        "member_id": r.member_id,
        "type": r.event.type,
        "occurred_at": r.event.occurred_at,
        "amount": r.event.amount,
        "properties": r.event.properties,
        "status": r.status.value,
        "points_awarded": _points_awarded(r),
        "message": r.message,
        "content_hash": r.event.content_hash,
        "received_at": now,
    }


def _unnested(program_id: int, rows: Sequence[EventRow], now: datetime) -> Select[Any]:
    """The rows as one SELECT over column arrays (amounts as scaled units, properties as JSON text)."""
    u = unnest(
        [
            ("external_id", String(), [r.event.external_id for r in rows]),
            ("member_id", BigInteger(), [r.member_id for r in rows]),
            ("type", String(), [r.event.type for r in rows]),
            ("occurred_at", DateTime(timezone=True), [r.event.occurred_at for r in rows]),
            ("amount", BigInteger(), [_units(r.event.amount) for r in rows]),
            ("properties", Text(), [orjson.dumps(r.event.properties).decode() for r in rows]),
            ("status", String(), [r.status.value for r in rows]),
            ("points_awarded", BigInteger(), [_points_awarded(r) for r in rows]),
            ("message", Text(), [r.message for r in rows]),
            ("content_hash", String(), [r.event.content_hash for r in rows]),
        ]
    )
    return select(
        literal(program_id, BigInteger()),
        u.c.external_id,
        u.c.member_id,
        u.c.type,
        u.c.occurred_at,
        u.c.amount,
        sql_cast(u.c.properties, postgresql.JSONB()),
        u.c.status,
        u.c.points_awarded,
        u.c.message,
        u.c.content_hash,
        literal(now, DateTime(timezone=True)),
    )


def _units(amount: Decimal | None) -> int | None:
    return None if amount is None else amount_to_units(amount)
