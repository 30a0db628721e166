"""Rewards by segment: a reward may list segments (tiers included) whose members alone may redeem it.

A reward that lists none is for everyone. Keys are stored, not segment ids, so a tier ladder
replaced (`tier-gold` recreated) keeps its rewards; a listed key that no longer names a segment
admits nobody. A user segment a reward lists cannot be deleted (domain/segments/service.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Forbidden, InvalidInput
from domain.models import Member, Reward, RewardSegment, Segment, SegmentMembership

MAX_SEGMENTS = 50
NOT_ELIGIBLE = "NOT_ELIGIBLE"


def checked_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """The keys in order, each once; BAD_USER_INPUT for too many or blank ones."""
    unique = tuple(dict.fromkeys(k.strip() for k in keys))
    if len(unique) > MAX_SEGMENTS:
        raise InvalidInput(f"segmentKeys: at most {MAX_SEGMENTS} segments, got {len(unique)}")
    if any(not k or len(k) > 64 for k in unique):
        raise InvalidInput("segmentKeys: each key must be 1 to 64 characters")
    return unique


async def store_segments(session: AsyncSession, program_id: int, reward: Reward, keys: Sequence[str]) -> None:
    """Replace the segments the reward lists; each must name a segment of the program."""
    if keys:
        known = set(
            (
                await session.scalars(
                    select(Segment.key).where(Segment.program_id == program_id, Segment.key.in_(keys))
                )
            ).all()
        )
        missing = [k for k in keys if k not in known]
        if missing:
            raise InvalidInput(f"segmentKeys: no segment {missing[0][:70]!r} in this program")
    await session.execute(delete(RewardSegment).where(RewardSegment.reward_id == reward.id))
    if keys:
        await session.execute(
            insert(RewardSegment), [{"reward_id": reward.id, "segment_key": k} for k in keys]
        )


async def listed_segments(session: AsyncSession, reward_ids: Sequence[int]) -> dict[int, list[str]]:
    """The segment keys each reward lists, in key order (one query)."""
    found: dict[int, list[str]] = defaultdict(list)
    if reward_ids:
        rows = await session.execute(
            select(RewardSegment.reward_id, RewardSegment.segment_key)
            .where(RewardSegment.reward_id.in_(reward_ids))
            .order_by(RewardSegment.reward_id, RewardSegment.segment_key)
        )
        for reward_id, key in rows:
            found[reward_id].append(key)
    return found


async def check_eligible(
    session: AsyncSession, reward: Reward, segment_keys: Sequence[str], member: Member
) -> None:
    """FORBIDDEN (reason NOT_ELIGIBLE) unless the reward is for everyone or the member is in one listed."""
    if not segment_keys:
        return
    held = await session.scalar(
        select(Segment.key)
        .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
        .where(
            Segment.program_id == reward.program_id,
            Segment.key.in_(segment_keys),
            SegmentMembership.member_id == member.id,
        )
        .limit(1)
    )
    if held is None:
        raise Forbidden(
            f"rewardKey: reward {reward.key!r} is only for members of {', '.join(segment_keys)}",
            reason=NOT_ELIGIBLE,
        )
