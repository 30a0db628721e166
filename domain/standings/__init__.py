"""The standings feed: members whose leaderboard standings may have moved.

An outbox written with the change (see models.StandingsFeed), drained by
gamification's leaderboard feeder.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.engine import announce
from domain.models import StandingsFeed

#: Announced by every transaction that marks standings (the leaderboard feeder wakes on it).
STANDINGS = "standings"


async def mark_standings(
    session: AsyncSession, program_id: int, touched: Iterable[tuple[int, datetime]]
) -> None:
    """Mark (member id, when it counts) pairs for the leaderboard feeder, inside the caller's transaction."""
    rows = [{"program_id": program_id, "member_id": m, "at": at} for m, at in sorted(set(touched))]
    if rows:
        await session.execute(insert(StandingsFeed), rows)
        announce(session, STANDINGS)
