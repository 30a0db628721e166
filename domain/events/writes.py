"""Set-based writes of an accepted batch: events, ledger entries, balances, aggregates."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.dialect import greatest, insert_for, least
from domain.db.types import amount_to_units
from domain.events.validation import ValidEvent
from domain.models import Event, EventAggregate, LedgerEntry, Member


@dataclass(frozen=True)
class EventRow:
    event: ValidEvent
    member_id: int
    status: str  # EventStatus
    entry_status: str  # AccrualStatus of its ledger entry, when it earns points
    points: int
    message: str | None


async def existing_event_hashes(
    session: AsyncSession, program_id: int, external_ids: Sequence[str]
) -> dict[str, str]:
    if not external_ids:
        return {}
    rows = await session.execute(
        select(Event.external_id, Event.content_hash).where(
            Event.program_id == program_id, Event.external_id.in_(external_ids)
        )
    )
    return {external_id: content_hash for external_id, content_hash in rows}  # noqa: C416 - rows are Row objects


async def insert_events(
    session: AsyncSession, program_id: int, rows: Sequence[EventRow], now: datetime
) -> dict[str, int]:
    """Insert in externalId order (a stable lock order); returns the ids of those that were new."""
    if not rows:
        return {}
    table = Event.__table__
    statement = (
        insert_for(session, table)
        .on_conflict_do_nothing(index_elements=[table.c.program_id, table.c.external_id])
        .returning(table.c.id, table.c.external_id)
    )
    params = [
        {
            "program_id": program_id,
            "external_id": r.event.external_id,
            "member_id": r.member_id,
            "type": r.event.type,
            "occurred_at": r.event.occurred_at,
            "amount": r.event.amount,
            "properties": r.event.properties,
            "status": r.status,
            "points_awarded": r.points if r.status == "ACCEPTED" else 0,
            "message": r.message,
            "content_hash": r.event.content_hash,
            "received_at": now,
        }
        for r in sorted(rows, key=lambda r: r.event.external_id)
    ]
    result = await session.execute(statement, params)
    return {external_id: event_id for event_id, external_id in result}


async def insert_ledger_entries(session: AsyncSession, entries: Sequence[dict[str, Any]]) -> None:
    if entries:
        connection = await session.connection()  # Core executemany: no ORM bookkeeping per row
        await connection.execute(insert(cast(Table, LedgerEntry.__table__)), list(entries))


async def add_to_balances(session: AsyncSession, posted: dict[int, int], pending: dict[int, int]) -> None:
    """Move cached balances in member-id order, so concurrent batches lock rows in one order."""
    member_ids = sorted(set(posted) | set(pending))
    if not member_ids:
        return
    table = cast(Table, Member.__table__)
    statement = (
        update(table)
        .where(table.c.id == bindparam("member_id"))
        .values(
            points_balance=table.c.points_balance + bindparam("posted"),
            pending_points=table.c.pending_points + bindparam("pending"),
        )
    )
    connection = await session.connection()
    await connection.execute(
        statement,
        [{"member_id": m, "posted": posted.get(m, 0), "pending": pending.get(m, 0)} for m in member_ids],
    )


@dataclass
class _Bucket:
    count: int = 0
    amount_count: int = 0
    amount_sum: int = 0
    amount_min: int | None = None
    amount_max: int | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, event: ValidEvent) -> None:
        self.count += 1
        if event.amount is not None:
            units = amount_to_units(event.amount)
            self.amount_count += 1
            self.amount_sum += units
            self.amount_min = units if self.amount_min is None else min(self.amount_min, units)
            self.amount_max = units if self.amount_max is None else max(self.amount_max, units)
        at = event.occurred_at
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)


def day_of(at: datetime) -> date:
    return at.date()  # occurredAt is normalised to UTC by the time it gets here


async def add_to_aggregates(
    session: AsyncSession, program_id: int, accepted: Iterable[tuple[int, ValidEvent]]
) -> None:
    """Fold accepted events into per member x type x UTC-day buckets (one upsert per bucket)."""
    buckets: dict[tuple[int, str, date], _Bucket] = defaultdict(_Bucket)
    for member_id, event in accepted:
        buckets[(member_id, event.type, day_of(event.occurred_at))].add(event)
    if not buckets:
        return
    table = EventAggregate.__table__
    statement = insert_for(session, table)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.member_id, table.c.event_type, table.c.day],
        set_={
            "count": table.c.count + excluded.count,
            "amount_count": table.c.amount_count + excluded.amount_count,
            "amount_sum": table.c.amount_sum + excluded.amount_sum,
            "amount_min": least(table.c.amount_min, excluded.amount_min),
            "amount_max": greatest(table.c.amount_max, excluded.amount_max),
            "first_at": least(table.c.first_at, excluded.first_at),
            "last_at": greatest(table.c.last_at, excluded.last_at),
        },
    )
    await session.execute(
        statement,
        [
            {
                "member_id": member_id,
                "event_type": event_type,
                "day": day,
                "program_id": program_id,
                "count": b.count,
                "amount_count": b.amount_count,
                "amount_sum": b.amount_sum,
                "amount_min": b.amount_min,
                "amount_max": b.amount_max,
                "first_at": b.first_at,
                "last_at": b.last_at,
            }
            for (member_id, event_type, day), b in sorted(buckets.items())
        ],
    )
