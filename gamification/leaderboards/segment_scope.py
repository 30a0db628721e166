"""Keeps SEGMENT-scoped boards to the segment's current members.

Told of every membership change inside its transaction (domain/changes.py), it
marks the members who entered or left a segment that scopes a board, so the
feeder adds them to (or drops them from) that board's open periods. Closed
periods keep whom they ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import LoggedChange
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

    async def segments_changed(
        self, session: AsyncSession, program_id: int, changes: Sequence[LoggedChange], now: datetime
    ) -> None:
        scoping = await self.watched(session, program_id)
        await mark_standings(
            session, program_id, [(c.member_id, now) for c in changes if c.segment_id in scoping]
        )
