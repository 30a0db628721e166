"""Members' due times (members.segments_due_at): when time alone may next flip one of their segments.

The engine computes them (`horizon.earliest_change`) and stores them here; the
scheduler drains the members whose time has come.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.db.types import UtcDateTime
from domain.models import Member


class DueTimes(StrEnum):
    """How `reevaluate` stores the due times it computes."""

    #: Move a stored due time earlier only (an earlier stored one stays: waking early is harmless).
    EARLIER = "earlier"
    #: Replace the stored due time, None included (the plan covered every DYNAMIC segment).
    EXACT = "exact"


#: Members per UPDATE of due times (one CASE arm and bound value per member).
DUE_CHUNK = 500


async def write_due_times(
    session: AsyncSession, due_at: Mapping[int, datetime | None], mode: DueTimes
) -> None:
    """Store members' due times: one UPDATE per `DUE_CHUNK` members, none when there is nothing to store."""
    items = sorted(due_at.items() if mode == DueTimes.EXACT else ((m, t) for m, t in due_at.items() if t))
    for start in range(0, len(items), DUE_CHUNK):
        chunk = items[start : start + DUE_CHUNK]
        new = case({member_id: literal(at, UtcDateTime()) for member_id, at in chunk}, value=Member.id)
        stored = Member.segments_due_at
        value = new if mode == DueTimes.EXACT else case((stored <= new, stored), else_=new)
        await session.execute(
            update(Member)
            .where(in_values(Member.id, [member_id for member_id, _ in chunk], dialect_of(session)))
            .values(segments_due_at=value)
            .execution_options(synchronize_session=False)
        )


async def stored_due_times(session: AsyncSession, member_ids: Sequence[int]) -> dict[int, datetime | None]:
    """The members' stored due times."""
    rows = await session.execute(
        select(Member.id, Member.segments_due_at).where(in_values(Member.id, member_ids, dialect_of(session)))
    )
    return {member_id: due_at for member_id, due_at in rows}  # noqa: C416 - rows are Row objects


async def mark_program_due(session: AsyncSession, program_id: int, now: datetime) -> None:
    """Make every member of the program due by `now` (those due earlier keep their time).

    On PostgreSQL the rows are locked in id order first, like `lock_members`, so
    this never deadlocks with an ingest batch locking some of the same members.
    """
    later = (Member.program_id == program_id) & (
        Member.segments_due_at.is_(None) | (Member.segments_due_at > now)
    )
    chosen = select(Member.id).where(later)
    if session.get_bind().dialect.name == "postgresql":
        chosen = chosen.order_by(Member.id).with_for_update()
    await session.execute(
        update(Member)
        .where(Member.id.in_(chosen))
        .values(segments_due_at=now)
        .execution_options(synchronize_session=False)
    )
