"""Reads and writes of ladders and members' tier states (all tier SQL outside the set-based pass)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.models import MemberTier
from domain.models import TierLadder as LadderRow
from domain.tiers.ladder import Ladder, TierState


async def load_ladder(session: AsyncSession, program_id: int) -> Ladder | None:
    row = await session.get(LadderRow, program_id)
    if row is None:
        return None
    return Ladder.from_stored(row.qualifier, row.tiers, row.downgrade, row.grace_days)


async def load_states(
    session: AsyncSession, ladder: Ladder, member_ids: Sequence[int]
) -> dict[int, TierState]:
    """The members' stored states; a member without one (or holding a key the ladder lost) is absent."""
    if not member_ids:
        return {}
    rows = await session.execute(
        select(
            MemberTier.member_id,
            MemberTier.tier_key,
            MemberTier.since,
            MemberTier.kept_until,
            MemberTier.highest_key,
        ).where(in_values(MemberTier.member_id, member_ids, dialect_of(session)))
    )
    states: dict[int, TierState] = {}
    for member_id, key, since, kept_until, highest_key in rows:
        tier = ladder.index(key)
        if tier is None:
            continue
        highest = ladder.index(highest_key)
        states[member_id] = TierState(
            tier, since, kept_until, tier if highest is None else max(highest, tier)
        )
    return states


async def write_states(
    session: AsyncSession, program_id: int, ladder: Ladder, states: Mapping[int, TierState]
) -> None:
    """Replace the members' stored states: two statements, whatever their number."""
    if not states:
        return
    ids = sorted(states)
    await session.execute(delete(MemberTier).where(in_values(MemberTier.member_id, ids, dialect_of(session))))
    await session.execute(
        insert(MemberTier),
        [
            {
                "member_id": member_id,
                "program_id": program_id,
                "tier_key": ladder.tiers[states[member_id].tier].key,
                "since": states[member_id].since,
                "kept_until": states[member_id].kept_until,
                "highest_key": ladder.tiers[states[member_id].highest].key,
            }
            for member_id in ids
        ],
    )


async def held_multipliers(
    session: AsyncSession, program_id: int, member_ids: Sequence[int]
) -> dict[int, Decimal]:
    """The earn multiplier of the tier each member holds now, for those whose multiplier is not 1."""
    if not member_ids:
        return {}
    ladder = await load_ladder(session, program_id)
    if ladder is None or all(t.earn_multiplier == 1 for t in ladder.tiers):
        return {}
    by_key = {t.key: t.earn_multiplier for t in ladder.tiers}
    rows = await session.execute(
        select(MemberTier.member_id, MemberTier.tier_key).where(
            in_values(MemberTier.member_id, member_ids, dialect_of(session))
        )
    )
    return {m: by_key[k] for m, k in rows if by_key.get(k, Decimal(1)) != 1}
