"""Keeps SEGMENT-scoped boards to the segment's current members.

A message-bus handler of `SegmentsChanged` (domain/changes.py), inside the
transaction of the change, it marks the members who entered or left a segment that scopes a board, so the
feeder adds them to (or drops them from) that board's open periods. Closed
periods keep whom they ranked.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import SegmentsChanged
from domain.models import Leaderboard, Segment
from domain.standings import mark_standings
from gamification.leaderboards.boards import BoardScope


class SegmentBoards:
    async def watched(self, session: AsyncSession, program_id: int) -> frozenset[int]:
        rows = await session.scalars(
            select(Segment.id)
            .join(Leaderboard, Leaderboard.segment_key == Segment.key)
            .where(
                Segment.program_id == program_id,
                Leaderboard.program_id == program_id,
                Leaderboard.scope == BoardScope.SEGMENT.value,
            )
        )
        return frozenset(rows.all())

    async def segments_changed(self, session: AsyncSession, changed: SegmentsChanged) -> None:
        if not changed.changes:
            return
        scoping = await self.watched(session, changed.program_id)
        await mark_standings(
            session,
            changed.program_id,
            [(c.member_id, changed.at) for c in changed.changes if c.segment_id in scoping],
        )
