"""Tier ladders in tests: a standard ladder and what a member holds, read from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import select

from domain.models import Member, MemberTier, Segment, SegmentChange, SegmentMembership
from domain.tiers.ladder import LadderDraft, TierDraft

if TYPE_CHECKING:
    from api.runtime import Services


def spend_ladder(
    qualifier: str = "sum(purchase.amount, 30d)",
    downgrade: str = "RECALCULATE",
    grace_days: int = 0,
    gold_multiplier: Decimal = Decimal(1),
) -> LadderDraft:
    """Bronze at 0, Silver at 100, Gold at 500."""
    return LadderDraft(
        qualifier,
        [
            TierDraft("bronze", "Bronze", Decimal(0)),
            TierDraft("silver", "Silver", Decimal(100)),
            TierDraft("gold", "Gold", Decimal(500), gold_multiplier),
        ],
        downgrade,
        grace_days,
    )


@dataclass(frozen=True)
class Held:
    """What the database says a member holds: its state and its TIER segment memberships."""

    tier: str | None
    kept_until: datetime | None
    segments: tuple[str, ...]


async def held(services: Services, program_id: int, external_id: str) -> Held:
    async with services.db.read() as session:
        member_id = (
            await session.execute(
                select(Member.id).where(Member.program_id == program_id, Member.external_id == external_id)
            )
        ).scalar_one()
        state = (
            await session.execute(
                select(MemberTier.tier_key, MemberTier.kept_until).where(MemberTier.member_id == member_id)
            )
        ).one_or_none()
        segments = (
            await session.execute(
                select(Segment.key)
                .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
                .where(SegmentMembership.member_id == member_id, Segment.kind == "TIER")
                .order_by(Segment.key)
            )
        ).scalars()
        return Held(None if state is None else state[0], None if state is None else state[1], tuple(segments))


async def tier_changes(services: Services, program_id: int) -> list[tuple[str, str, str]]:
    """The change log of the program's TIER segments: (segment, member, ENTERED/LEFT), in order."""
    async with services.db.read() as session:
        rows = await session.execute(
            select(Segment.key, Member.external_id, SegmentChange.change)
            .join(Segment, Segment.id == SegmentChange.segment_id)
            .join(Member, Member.id == SegmentChange.member_id)
            .where(SegmentChange.program_id == program_id, Segment.kind == "TIER")
            .order_by(SegmentChange.id)
        )
        return [(key, member, change) for key, member, change in rows]


async def due_at(services: Services, program_id: int, external_id: str) -> datetime | None:
    """The member's `segments_due_at`: when the scheduler claims it next."""
    async with services.db.read() as session:
        query = select(Member.segments_due_at).where(
            Member.program_id == program_id, Member.external_id == external_id
        )
        return (await session.execute(query)).scalar_one()
