"""Streaks: consecutive UTC days with an accepted event of a type, as `streak(type)` in segment rules.

The days come from the per-day buckets (event_aggregates) and are counted by the
segment evaluator's own `streak`, so a member's streak and a `streak(...)`
condition cannot disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import EventAggregate
from domain.segments.evaluate import streak

#: (member id, event type)
StreakKey = tuple[int, str]


async def member_streaks(
    session: AsyncSession, keys: Sequence[StreakKey], today: date
) -> dict[StreakKey, int]:
    """The streak of each (member, event type) as of `today` (UTC); 0 without events."""
    if not keys:
        return {}
    bucket = EventAggregate
    rows = await session.execute(
        select(bucket.member_id, bucket.event_type, bucket.day).where(
            bucket.member_id.in_(sorted({m for m, _ in keys})),
            bucket.event_type.in_(sorted({t for _, t in keys})),
            bucket.day <= today,
        )
    )
    days: dict[StreakKey, set[date]] = defaultdict(set)
    for member_id, event_type, day in rows:
        days[(member_id, event_type)].add(day)
    return {key: streak(days.get(key, ()), today) for key in keys}
