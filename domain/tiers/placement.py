"""The set-based pass of `setTierLadder` and `loyalty tiers recompute`: every member placed at once.

One compiled SELECT ranks every member of the program (the index of the highest
tier its qualifier reaches, `Compilation.members_ranked`) into a temporary table;
each TIER segment's membership is then replaced from it by `replace_members` (the
change log, as a segment recompute writes it), and the members' states are
rewritten from the memberships in one INSERT ... SELECT. A fixed number of
statements per tier, whatever the number of members. The program's member rows are
locked first (PostgreSQL), in id order like every writer, so batches arriving meanwhile
wait and are then evaluated under the new ladder. Grace state is not carried over: every
member holds the tier its value reaches now, keptUntil cleared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import case, column, delete, insert, literal, null, select, table, text
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.types import UtcDateTime
from domain.models import Member, MemberTier, SegmentMembership
from domain.segments.compile import Compilation
from domain.segments.membership import Recomputed, replace_members
from domain.tiers.ladder import Ladder

#: (steps done, steps in all, what was done)
PlacementProgress = Callable[[int, int, str], None]


async def place_members(
    session: AsyncSession,
    program_id: int,
    ladder: Ladder,
    segment_ids: Sequence[int],
    compilation: Compilation,
    now: datetime,
    *,
    watched: frozenset[int] = frozenset(),
    progress: PlacementProgress | None = None,
) -> list[Recomputed]:
    """Put every member of the program in the tier its qualifier reaches now; per tier, what moved."""
    steps = len(ladder.tiers) + 2
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:  # the members' rows in id order, as every writer takes them: batches wait, none deadlock
        await session.execute(
            select(Member.id).where(Member.program_id == program_id).order_by(Member.id).with_for_update()
        )
    await session.execute(text("DROP TABLE IF EXISTS tier_eval"))
    await session.execute(
        text(
            "CREATE TEMPORARY TABLE tier_eval (member_id BIGINT PRIMARY KEY, rank INTEGER NOT NULL)"
            + (" ON COMMIT DROP" if postgres else "")
        )
    )
    ranked = table("tier_eval", column("member_id"), column("rank"))
    rungs = [ladder.reaches(i) for i in range(1, len(ladder.tiers))]
    await session.execute(
        insert(ranked).from_select(["member_id", "rank"], compilation.members_ranked(rungs))
    )
    if postgres:
        await session.execute(text("ANALYZE tier_eval"))
    if progress is not None:
        progress(1, steps, "qualifier measured")
    moved: list[Recomputed] = []
    for i, tier in enumerate(ladder.tiers):
        chosen = select(ranked.c.member_id).where(ranked.c.rank == i)
        result = await replace_members(
            session,
            program_id,
            segment_ids[i],
            tier.segment_key,
            None,
            chosen,
            now,
            log_rows=segment_ids[i] in watched,
        )
        moved.append(result)
        if progress is not None:
            progress(2 + i, steps, f"{tier.segment_key}: +{result.entered} -{result.left}")
    await session.execute(delete(MemberTier).where(MemberTier.program_id == program_id))
    key = case(
        {sid: literal(t.key) for sid, t in zip(segment_ids, ladder.tiers, strict=True)},
        value=SegmentMembership.segment_id,
    )
    await session.execute(
        insert(MemberTier).from_select(
            ["member_id", "program_id", "tier_key", "since", "kept_until", "highest_key"],
            select(
                SegmentMembership.member_id,
                literal(program_id),
                key,
                SegmentMembership.since,
                null().cast(UtcDateTime()),
                key,
            ).where(SegmentMembership.segment_id.in_(list(segment_ids))),
        )
    )
    await session.execute(text("DROP TABLE tier_eval"))
    if progress is not None:
        progress(steps, steps, "states written")
    return moved
