"""What churn features need of a program, loaded in a fixed number of queries.

The daily aggregates (`event_aggregates`) give purchases per day and the days with
any activity; members give joinedAt and the current balance; the POSTED ledger
entries after the oldest cutoff wind the balance back (an accrual counts at its
event's occurredAt, other entries at their creation); manual tags are counted as
they are now (tags carry no history).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.types import AMOUNT_SCALE, UtcDateTime
from domain.enums import AccrualStatus
from domain.models import Event, EventAggregate, LedgerEntry, Member, MemberTag
from domain.predict.features import MemberHistory, midnight

PURCHASE = "purchase"
_UNIT = 10**AMOUNT_SCALE


async def load_histories(session: AsyncSession, program_id: int, since: date) -> list[MemberHistory]:
    """Every member of the program, with buckets and ledger movements from `since` on (members by id)."""
    histories: dict[int, MemberHistory] = {}
    for member_id, joined_at, balance in await session.execute(
        select(Member.id, Member.joined_at, Member.points_balance)
        .where(Member.program_id == program_id)
        .order_by(Member.id)
    ):
        histories[member_id] = MemberHistory(member_id, joined_at, balance)
    for member_id, count in await session.execute(
        select(MemberTag.member_id, func.count())
        .where(MemberTag.program_id == program_id, MemberTag.source == "manual")
        .group_by(MemberTag.member_id)
    ):
        histories[member_id].manual_tags = int(count)
    buckets = EventAggregate
    active: dict[int, set[date]] = {}
    for member_id, event_type, day, count, amount in await session.execute(
        select(buckets.member_id, buckets.event_type, buckets.day, buckets.count, buckets.amount_sum)
        .where(buckets.program_id == program_id)
        .order_by(buckets.member_id, buckets.day)
    ):
        member = histories[member_id]
        active.setdefault(member_id, set()).add(day)
        if event_type == PURCHASE and count > 0:
            member.add_purchases(day, int(count), int(amount or 0) / _UNIT)
    for member_id, days in active.items():
        histories[member_id].active_days = sorted(days)
    await _load_movements(session, program_id, midnight(since), histories)
    return list(histories.values())


async def _load_movements(
    session: AsyncSession, program_id: int, since: datetime, histories: dict[int, MemberHistory]
) -> None:
    at = type_coerce(func.coalesce(Event.occurred_at, LedgerEntry.created_at), UtcDateTime)
    rows = await session.execute(
        select(LedgerEntry.member_id, at, LedgerEntry.points)
        .outerjoin(Event, Event.id == LedgerEntry.event_id)
        .where(
            LedgerEntry.program_id == program_id,
            LedgerEntry.status == AccrualStatus.POSTED,
            at > since,
        )
    )
    for member_id, instant, points in rows:
        histories[member_id].movements.append((instant, int(points)))
