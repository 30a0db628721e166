"""Standings computed from the database: the truth the Redis boards are kept equal to.

A standing is one member's score on a board for one period, with the instant it
was reached (the newest contributing entry's time) and the scope it ranks in.
What counts:
- POINTS: POSTED ledger entries except redemptions, expiries and reversals of either
  (spending or losing points to expiry does not lower a board; taking back earned points does). An
  entry counts at its event's occurredAt (a reversal at its original event's),
  or when it was posted if it has no event (bonuses).
- EVENT_COUNT / EVENT_AMOUNT: ACCEPTED events of the board's type, at occurredAt.
Held (PENDING_REVIEW) and blocked (REJECTED) accruals never count.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from domain.db.types import UtcDateTime
from domain.enums import AccrualStatus, EntryKind, EventStatus
from domain.events.refunds import not_refunded
from domain.models import Event, LedgerEntry, Member, Segment, SegmentMembership
from gamification.leaderboards.boards import BoardDefinition, BoardMetric, BoardScope

PROGRAM_SCOPE = "program"
#: Entry kinds a POINTS board never counts (nor reversals of them): spent and expired points.
NOT_EARNED = (EntryKind.REDEMPTION.value, EntryKind.EXPIRY.value)
SEGMENT_SCOPE = "segment"


def organization_scope(organization_id: int) -> str:
    return f"org:{organization_id}"


@dataclass(frozen=True)
class Standing:
    member_id: int
    scope: str
    score: int
    reached_at: datetime


@dataclass(frozen=True)
class Window:
    """The period [start, end) (None: unbounded) and, for a frozen ranking, what was known at `as_of`."""

    start: datetime | None
    end: datetime | None
    as_of: datetime | None = None


async def compute_standings(
    session: AsyncSession,
    program_id: int,
    board: BoardDefinition,
    window: Window,
    member_ids: Collection[int] | None = None,
) -> list[Standing]:
    """Every member's standing on `board` in `window` (only `member_ids` when given), in no order.

    Members outside the board's scope (no organization, not in the segment) have none.
    """
    if member_ids is not None and not member_ids:
        return []
    rows = await session.execute(_scoped(_scored(program_id, board, window, member_ids), program_id, board))
    standings = []
    for row in rows:
        total = row.total
        score = int(total // 1) if isinstance(total, Decimal) else int(total or 0)
        standings.append(Standing(row.member_id, _scope_name(board, row.scope), score, row.reached_at))
    return standings


async def member_scopes(
    session: AsyncSession, program_id: int, board: BoardDefinition, member_ids: Collection[int]
) -> dict[int, str]:
    """The scope each member ranks in now (members outside the board's scope are missing)."""
    if board.scope == BoardScope.PROGRAM:
        return dict.fromkeys(member_ids, PROGRAM_SCOPE)
    if board.scope == BoardScope.ORGANIZATION:
        rows = await session.execute(
            select(Member.id, Member.organization_id).where(
                Member.id.in_(member_ids), Member.organization_id.is_not(None)
            )
        )
        return {member_id: organization_scope(org) for member_id, org in rows.all() if org is not None}
    rows = await session.execute(
        select(SegmentMembership.member_id)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(
            Segment.program_id == program_id,
            Segment.key == board.segment_key,
            SegmentMembership.member_id.in_(member_ids),
        )
    )
    return dict.fromkeys(rows.scalars(), SEGMENT_SCOPE)


def _scored(
    program_id: int, board: BoardDefinition, window: Window, member_ids: Collection[int] | None
) -> Subquery:
    """member_id, total, reached_at: one row per member with something counted in the window."""
    if board.metric == BoardMetric.POINTS:
        original = aliased(LedgerEntry)
        at: ColumnElement[datetime] | InstrumentedAttribute[datetime] = func.coalesce(
            Event.occurred_at, LedgerEntry.created_at, type_=UtcDateTime
        )
        member: InstrumentedAttribute[int] = LedgerEntry.member_id
        query: Select[Any] = (
            select(
                member.label("member_id"),
                func.sum(LedgerEntry.points).label("total"),
                func.max(at, type_=UtcDateTime).label("reached_at"),
            )
            .outerjoin(Event, Event.id == LedgerEntry.event_id)
            .outerjoin(original, original.id == LedgerEntry.reverses_entry_id)
            .where(
                LedgerEntry.program_id == program_id,
                LedgerEntry.status == AccrualStatus.POSTED.value,
                LedgerEntry.kind.not_in(NOT_EARNED),
                or_(original.id.is_(None), original.kind.not_in(NOT_EARNED)),
            )
        )
        posted_at: InstrumentedAttribute[datetime] = LedgerEntry.created_at
    else:
        at = Event.occurred_at
        member = Event.member_id
        total: ColumnElement[Any] = (
            func.count() if board.metric == BoardMetric.EVENT_COUNT else func.sum(Event.amount)
        )
        query = select(
            member.label("member_id"),
            total.label("total"),
            func.max(Event.occurred_at, type_=UtcDateTime).label("reached_at"),
        ).where(
            Event.program_id == program_id,
            Event.type == board.event_type,
            Event.status == EventStatus.ACCEPTED.value,
            not_refunded(Event),
        )
        posted_at = Event.received_at
    if window.start is not None:
        query = query.where(at >= window.start)
    if window.end is not None:
        query = query.where(at < window.end)
    if window.as_of is not None:
        query = query.where(posted_at <= window.as_of)
    if member_ids is not None:
        query = query.where(member.in_(sorted(member_ids)))
    return query.group_by(member).subquery()


def _scoped(
    scored: Subquery, program_id: int, board: BoardDefinition
) -> Select[tuple[int, object, datetime, object]]:
    """The scored rows with the scope each member ranks in, members outside the scope dropped.

    Erased members rank nowhere: their entries still count in the program's sums, never on a board."""
    columns = (scored.c.member_id, scored.c.total, scored.c.reached_at)
    if board.scope == BoardScope.ORGANIZATION:
        return (
            select(*columns, Member.organization_id.label("scope"))
            .join(Member, Member.id == scored.c.member_id)
            .where(Member.organization_id.is_not(None), Member.erased_at.is_(None))
        )
    erased = exists().where(Member.id == scored.c.member_id, Member.erased_at.is_not(None))
    if board.scope == BoardScope.PROGRAM:
        return select(*columns, literal(None).label("scope")).where(~erased)
    return (
        select(*columns, literal(None).label("scope"))
        .join(SegmentMembership, SegmentMembership.member_id == scored.c.member_id)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(Segment.program_id == program_id, Segment.key == board.segment_key, ~erased)
    )


def _scope_name(board: BoardDefinition, value: object) -> str:
    if board.scope == BoardScope.ORGANIZATION:
        return organization_scope(int(str(value)))
    return SEGMENT_SCOPE if board.scope == BoardScope.SEGMENT else PROGRAM_SCOPE
