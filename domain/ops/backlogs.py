"""Backlogs and lags of the background loops, read from the database when /metrics is scraped.

They describe the deployment, not one process, so any process answers the
same. Each figure is one indexed range read, and each count stops at
`COUNT_CAP` rows, so a scrape costs little however far behind a loop is:

| figure | read |
|---|---|
| relay lag | `segment_changes` primary key after the stored position (`relay_positions`) |
| time-flip backlog and lag | `ix_members_segments_due_at` up to now |
| outbox pending, oldest due, dead | `ix_outbox_status_due` (status, next_attempt_at) |
| leaderboard feed backlog | `standings_feed` primary key |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.outbox import OutboxStatus
from domain.db.engine import Database
from domain.live.relay import stored_position
from domain.models import Member, OutboxItem, SegmentChange, StandingsFeed

#: Counts stop here: a gauge at the cap means "at least this many".
COUNT_CAP = 100_000


@dataclass(frozen=True)
class Backlogs:
    #: Change-log rows committed after the relay's position, and how old the oldest of them is.
    relay_lag_changes: int
    relay_lag_seconds: float
    #: Members whose segments_due_at has passed, and how long ago the oldest fell due.
    time_flip_backlog: int
    time_flip_lag_seconds: float
    #: Outbox rows waiting (PENDING, due or backing off), how long the oldest due one has waited, DEAD rows.
    outbox_pending: int
    outbox_oldest_due_seconds: float
    outbox_dead: int
    #: standings_feed rows the leaderboard feeder has not fed yet.
    standings_feed_backlog: int


async def read_backlogs(db: Database, now: datetime) -> Backlogs:
    async with db.read() as session:
        return await _read(session, now)


async def _read(session: AsyncSession, now: datetime) -> Backlogs:
    position = await stored_position(session)
    if position is None:  # the relay has not run yet; it starts at the log's end
        relay_changes, relay_oldest = 0, None
    else:
        after = SegmentChange.id > position
        relay_changes = await _count(session, SegmentChange.id, after)
        relay_oldest = await session.scalar(
            select(SegmentChange.at).where(after).order_by(SegmentChange.id).limit(1)
        )
    due = Member.segments_due_at <= now
    flips = await _count(session, Member.id, due)
    oldest_due = await session.scalar(select(func.min(Member.segments_due_at)).where(due))
    pending = OutboxItem.status == OutboxStatus.PENDING.value
    outbox_pending = await _count(session, OutboxItem.id, pending)
    outbox_oldest = await session.scalar(
        select(func.min(OutboxItem.next_attempt_at)).where(pending, OutboxItem.next_attempt_at <= now)
    )
    dead = await _count(session, OutboxItem.id, OutboxItem.status == OutboxStatus.DEAD.value)
    feed = await _count(session, StandingsFeed.id, None)
    return Backlogs(
        relay_lag_changes=relay_changes,
        relay_lag_seconds=_age(now, relay_oldest),
        time_flip_backlog=flips,
        time_flip_lag_seconds=_age(now, oldest_due),
        outbox_pending=outbox_pending,
        outbox_oldest_due_seconds=_age(now, outbox_oldest),
        outbox_dead=dead,
        standings_feed_backlog=feed,
    )


async def _count(session: AsyncSession, column: Any, where: ColumnElement[bool] | None) -> int:
    """Rows matching `where`, counted up to COUNT_CAP."""
    rows = select(column)
    if where is not None:
        rows = rows.where(where)
    capped = rows.limit(COUNT_CAP).subquery()
    return int(await session.scalar(select(func.count()).select_from(capped)) or 0)


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0
