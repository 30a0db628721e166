"""The set-based statements behind `domain.ledger.posting`: ledger rows, cached balances, day buckets.

Only the posting module calls these (and test fixtures that build history directly).
Each writes a whole batch in one statement, in a stable order (balances by member
id, buckets by key), so concurrent batches lock rows in one order. On PostgreSQL
the inserts are one `unnest` statement with one array bind per column; balances stay
an executemany in member-id order (an UPDATE joined to an array would not promise
that lock order), except for members the transaction has locked already (the expiry sweep:
`add_to_locked_balances`); SQLite uses executemany throughout.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import (
    BigInteger,
    CursorResult,
    Date,
    DateTime,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

from domain.db.arrays import on_postgres, unnest
from domain.db.dialect import greatest, insert_for, least
from domain.db.types import amount_to_units
from domain.enums import EntryKind, EventStatus
from domain.errors import InvalidInput
from domain.models import Event, EventAggregate, LedgerEntry, Member

#: Idempotency keys of refund reversals start with it (`refund:<refunded externalId>`).
REFUND_KEY_PREFIX = "refund:"


class Occurrence(Protocol):
    """What a day bucket folds of an accepted event."""

    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def amount(self) -> Decimal | None: ...


_ENTRY_COLUMNS: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("program_id", BigInteger()),
    ("member_id", BigInteger()),
    ("points", BigInteger()),
    ("status", String()),
    ("kind", String()),
    ("reason", String()),
    ("event_id", BigInteger()),
    ("idempotency_key", String()),
    ("request_hash", String()),
    ("created_at", DateTime(timezone=True)),
)


async def insert_ledger_entries(session: AsyncSession, entries: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Insert entries (event accruals, expiries) in one statement (`unnest` on PostgreSQL,
    executemany on SQLite); returns the id of each entry that has an event, by its event id.
    Core only: no ORM bookkeeping per row."""
    if not entries:
        return {}
    table = cast(Table, LedgerEntry.__table__)
    connection = await session.connection()
    if on_postgres(session):
        rows = unnest([(name, kind, [e[name] for e in entries]) for name, kind in _ENTRY_COLUMNS])
        statement = insert(table).from_select([name for name, _ in _ENTRY_COLUMNS], select(*rows.c))
        result = await connection.execute(statement.returning(table.c.event_id, table.c.id))
    else:
        statement = insert(table).returning(table.c.event_id, table.c.id)
        result = await connection.execute(statement, list(entries))
    return {event_id: entry_id for event_id, entry_id in result if event_id is not None}


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


async def add_to_locked_balances(session: AsyncSession, posted: dict[int, int]) -> None:
    """Move the posted balances of members this transaction has already locked (the expiry sweep
    claims them `FOR UPDATE`): no lock order to keep, so one UPDATE joined to the arrays on
    PostgreSQL; elsewhere as `add_to_balances`."""
    if not on_postgres(session):
        await add_to_balances(session, posted, {})
        return
    if not posted:
        return
    table = cast(Table, Member.__table__)
    member_ids = sorted(posted)
    deltas = unnest(
        [("member_id", BigInteger(), member_ids), ("delta", BigInteger(), [posted[m] for m in member_ids])]
    )
    await session.execute(
        update(table)
        .where(table.c.id == deltas.c.member_id)
        .values(points_balance=table.c.points_balance + deltas.c.delta)
    )


async def move_balance(session: AsyncSession, member_id: int, delta: int, *, what: str) -> None:
    """Add `delta` to the member's posted balance; refuse (BAD_USER_INPUT) to go below zero."""
    statement = (
        update(Member).where(Member.id == member_id).values(points_balance=Member.points_balance + delta)
    )
    if delta < 0:
        statement = statement.where(Member.points_balance >= -delta)
    result = await session.execute(statement.execution_options(synchronize_session=False))
    assert isinstance(result, CursorResult)
    if result.rowcount == 0:
        balance = (
            await session.execute(select(Member.points_balance).where(Member.id == member_id))
        ).scalar()
        raise InvalidInput(f"points: the {what} of {-delta} exceeds the balance of {balance}")


@dataclass
class _Bucket:
    count: int = 0
    amount_count: int = 0
    amount_sum: int = 0
    amount_min: int | None = None
    amount_max: int | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, event: Occurrence) -> None:
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
    session: AsyncSession, program_id: int, accepted: Iterable[tuple[int, Occurrence]]
) -> None:
    """Fold accepted events into per member x type x UTC-day buckets (one upsert per batch)."""
    buckets: dict[tuple[int, str, date], _Bucket] = defaultdict(_Bucket)
    for member_id, event in accepted:
        buckets[(member_id, event.type, day_of(event.occurred_at))].add(event)
    if not buckets:
        return
    table = cast(Table, EventAggregate.__table__)
    ordered = sorted(buckets.items())
    values = [
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
        for (member_id, event_type, day), b in ordered
    ]
    statement = insert_for(session, table)
    if on_postgres(session):
        rows = unnest([(name, kind, [v[name] for v in values]) for name, kind in _BUCKET_COLUMNS])
        statement = statement.from_select([name for name, _ in _BUCKET_COLUMNS], select(*rows.c))
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.member_id, table.c.event_type, table.c.day, table.c.program_id],
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
    if on_postgres(session):
        await session.execute(statement)
    else:
        await session.execute(statement, values)


_BUCKET_COLUMNS: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("member_id", BigInteger()),
    ("event_type", String()),
    ("day", Date()),
    ("program_id", BigInteger()),
    ("count", BigInteger()),
    ("amount_count", BigInteger()),
    ("amount_sum", BigInteger()),
    ("amount_min", BigInteger()),
    ("amount_max", BigInteger()),
    ("first_at", DateTime(timezone=True)),
    ("last_at", DateTime(timezone=True)),
)


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def rebuild_bucket(
    session: AsyncSession, program_id: int, member_id: int, event_type: str, day: date
) -> None:
    """Recompute one member x type x day bucket exactly from its ACCEPTED, unrefunded events."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    events = cast(Table, Event.__table__)
    ledger = cast(Table, LedgerEntry.__table__)
    refunded = select(ledger.c.event_id).where(
        ledger.c.member_id == member_id,
        ledger.c.kind == EntryKind.REVERSAL.value,
        ledger.c.idempotency_key.like(f"{REFUND_KEY_PREFIX}%"),
        ledger.c.event_id.is_not(None),
    )
    result = await session.execute(
        select(events.c.occurred_at, events.c.amount).where(
            events.c.program_id == program_id,
            events.c.member_id == member_id,
            events.c.type == event_type,
            events.c.status == EventStatus.ACCEPTED.value,
            events.c.occurred_at >= start,
            events.c.occurred_at < start + timedelta(days=1),
            events.c.id.not_in(refunded),
        )
    )
    found: Sequence[Any] = result.all()
    aggregates = cast(Table, EventAggregate.__table__)
    where = (
        aggregates.c.member_id == member_id,
        aggregates.c.event_type == event_type,
        aggregates.c.day == day,
    )
    if not found:
        await session.execute(delete(aggregates).where(*where))
        return
    units = [amount_to_units(amount) for _, amount in found if amount is not None]
    times = [utc(at) for at, _ in found]
    await session.execute(
        update(aggregates)
        .where(*where)
        .values(
            count=len(found),
            amount_count=len(units),
            amount_sum=sum(units),
            amount_min=min(units) if units else None,
            amount_max=max(units) if units else None,
            first_at=min(times),
            last_at=max(times),
        )
    )
