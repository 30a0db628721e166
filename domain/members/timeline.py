"""A member's recent history for its timeline: events and segment changes, newest first.

Batched like domain/members/reads.py (one query per relation for any number of members, the
API's DataLoaders call them); the ledger has its own pages (reads.first_ledger_pages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Event, Member, Segment, SegmentChange
from domain.segments.service import ChangeView


@dataclass(frozen=True)
class EventView:
    """A recorded event as its member's timeline shows it (its properties stay out)."""

    external_id: str
    type: str
    occurred_at: datetime
    amount: Decimal | None
    status: str
    points_awarded: int


async def recent_events(
    session: AsyncSession, member_ids: Sequence[int], first: int
) -> dict[int, list[EventView]]:
    """For each member, its `first` latest events by occurrence, newest first."""
    ranked = (
        select(
            Event.id,
            func.row_number()
            .over(partition_by=Event.member_id, order_by=(Event.occurred_at.desc(), Event.id.desc()))
            .label("rn"),
        )
        .where(Event.member_id.in_(set(member_ids)))
        .subquery()
    )
    rows = await session.execute(
        select(Event)
        .join(ranked, ranked.c.id == Event.id)
        .where(ranked.c.rn <= first)
        .order_by(Event.member_id, Event.occurred_at.desc(), Event.id.desc())
    )
    found: dict[int, list[EventView]] = {member_id: [] for member_id in member_ids}
    for event in rows.scalars():
        found[event.member_id].append(
            EventView(
                event.external_id,
                event.type,
                event.occurred_at,
                event.amount,
                event.status,
                event.points_awarded,
            )
        )
    return found


async def recent_segment_changes(
    session: AsyncSession, member_ids: Sequence[int], first: int
) -> dict[int, list[ChangeView]]:
    """For each member, its `first` latest segment entries and exits, newest first."""
    ranked = (
        select(
            SegmentChange.id,
            func.row_number()
            .over(partition_by=SegmentChange.member_id, order_by=SegmentChange.id.desc())
            .label("rn"),
        )
        .where(SegmentChange.member_id.in_(set(member_ids)))
        .subquery()
    )
    rows = await session.execute(
        select(
            SegmentChange.id,
            SegmentChange.member_id,
            Segment.key,
            Member.external_id,
            SegmentChange.change,
            SegmentChange.at,
        )
        .join(ranked, ranked.c.id == SegmentChange.id)
        .join(Segment, Segment.id == SegmentChange.segment_id)
        .join(Member, Member.id == SegmentChange.member_id)
        .where(ranked.c.rn <= first)
        .order_by(SegmentChange.member_id, SegmentChange.id.desc())
    )
    found: dict[int, list[ChangeView]] = {member_id: [] for member_id in member_ids}
    for change_id, member_id, segment_key, external_id, change, at in rows:
        found[member_id].append(ChangeView(change_id, segment_key, external_id, change, at))
    return found
