"""The set-based statements behind expiry lots: writing them, spending them, and reading what is due.

Only `domain.ledger.posting` writes through these (and the expiry sweep claims through
`due_members`). Every writer holds the member's row lock first (posting moves the balance
before it touches lots), so the member row is the one serialisation point: a redemption and
the sweep never both take the same points.

Spending order: soonest `expires_at` first, ties by lot id; points without a lot (earned
while the program had no expiry) are spent last, i.e. they never expire. A reversal of a
credit takes what is left of that credit's own lot first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CursorResult,
    DateTime,
    Table,
    case,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

from domain.db.arrays import dialect_of, in_values, on_postgres, unnest
from domain.models import Member, PointsLot, Program


@dataclass(frozen=True)
class Credit:
    """A POSTED credit that may form a lot: its entry, and when its points were earned."""

    member_id: int
    entry_id: int
    points: int
    earned_at: datetime


@dataclass(frozen=True)
class DueLot:
    id: int
    member_id: int
    remaining: int


async def expiry_days(session: AsyncSession, program_id: int) -> int | None:
    """The program's `points_expiry_days` as of this transaction (None: credits form no lot)."""
    return cast(
        int | None, await session.scalar(select(Program.points_expiry_days).where(Program.id == program_id))
    )


_LOT_COLUMNS: tuple[tuple[str, TypeEngine[Any]], ...] = (
    ("program_id", BigInteger()),
    ("member_id", BigInteger()),
    ("entry_id", BigInteger()),
    ("points", BigInteger()),
    ("remaining", BigInteger()),
    ("earned_at", DateTime(timezone=True)),
    ("expires_at", DateTime(timezone=True)),
)


async def add_lots(session: AsyncSession, program_id: int, credits: Sequence[Credit], days: int) -> None:
    """One lot per positive credit, expiring `days` after it was earned (one statement)."""
    rows = [
        {
            "program_id": program_id,
            "member_id": c.member_id,
            "entry_id": c.entry_id,
            "points": c.points,
            "remaining": c.points,
            "earned_at": c.earned_at,
            "expires_at": c.earned_at + timedelta(days=days),
        }
        for c in credits
        if c.points > 0
    ]
    if not rows:
        return
    table = cast(Table, PointsLot.__table__)
    if on_postgres(session):
        values = unnest([(name, kind, [r[name] for r in rows]) for name, kind in _LOT_COLUMNS])
        await session.execute(
            insert(table).from_select([name for name, _ in _LOT_COLUMNS], select(*values.c))
        )
    else:
        await session.execute(insert(table), rows)


async def spend_lots(
    session: AsyncSession, member_id: int, points: int, own_entry_id: int | None = None
) -> None:
    """Take `points` from the member's open lots in spending order (own lot first); what the lots
    do not cover comes from points without a lot. One UPDATE over a running sum.

    The caller holds the member's row lock (it moved the balance first)."""
    if points <= 0:
        return
    table = cast(Table, PointsLot.__table__)
    first = case((table.c.entry_id == own_entry_id, 0), else_=1) if own_entry_id is not None else literal(1)
    running = func.sum(table.c.remaining).over(order_by=(first, table.c.expires_at, table.c.id))
    ordered = (
        select(table.c.id, table.c.remaining, (running - table.c.remaining).label("before"))
        .where(table.c.member_id == member_id, table.c.remaining > 0)
        .subquery("ordered")
    )
    left = literal(points) - ordered.c.before
    take = case((ordered.c.remaining < left, ordered.c.remaining), else_=left)
    statement = (
        update(table)
        .where(table.c.id == ordered.c.id, ordered.c.before < points)
        .values(remaining=table.c.remaining - take)
        .execution_options(synchronize_session=False)
    )
    await session.execute(statement)


async def due_members(
    session: AsyncSession, now: datetime, limit: int, program_id: int | None = None
) -> dict[int, list[int]]:
    """Lock the members owning the soonest `limit` due lots (by program), skipping members another
    transaction holds (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer).

    Members are locked in id order, as every balance move locks them."""
    table = cast(Table, PointsLot.__table__)
    due = select(table.c.member_id).where(table.c.expires_at <= now, table.c.remaining > 0)
    if program_id is not None:
        due = due.where(table.c.program_id == program_id)
    candidates = list(
        dict.fromkeys((await session.scalars(due.order_by(table.c.expires_at).limit(limit))).all())
    )
    if not candidates:
        return {}
    query = (
        select(Member.id, Member.program_id)
        .where(in_values(Member.id, candidates, dialect_of(session)))
        .order_by(Member.id)
    )
    if on_postgres(session):
        query = query.with_for_update(skip_locked=True)
    claimed: dict[int, list[int]] = {}
    for member_id, member_program in await session.execute(query):
        claimed.setdefault(member_program, []).append(member_id)
    return claimed


async def take_due_lots(session: AsyncSession, member_ids: Sequence[int], now: datetime) -> list[DueLot]:
    """Empty the locked members' due lots; returns what was left in each (two statements)."""
    table = cast(Table, PointsLot.__table__)
    dialect = dialect_of(session)
    rows = await session.execute(
        select(table.c.id, table.c.member_id, table.c.remaining)
        .where(
            in_values(table.c.member_id, member_ids, dialect),
            table.c.expires_at <= now,
            table.c.remaining > 0,
        )
        .order_by(table.c.id)
    )
    lots = [DueLot(lot_id, member_id, remaining) for lot_id, member_id, remaining in rows]
    if lots:
        result = await session.execute(
            update(table)
            .where(in_values(table.c.id, [lot.id for lot in lots], dialect))
            .values(remaining=0)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(result, CursorResult)
        assert result.rowcount == len(lots)
    return lots
