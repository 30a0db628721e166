"""Flips memberships that the passing of time alone changes, when they fall due.

Every member carries `segments_due_at`: the next instant time alone may flip one
of its DYNAMIC segments or its tier (computed by the engine with
`horizon.next_change` after each evaluation, and the end of a tier's grace).
A pass claims members whose instant has come, in one transaction: it decides
their tiers (when the program has a ladder), then evaluates all of their program's DYNAMIC segments (in
dependency order, so a segment reading a time-dependent one follows it in the
same pass), writes the flips through the engine (change log, triggers, live
relay) and stores each member's exact next due time, or NULL.

Several workers may run it: on PostgreSQL the claim is `FOR UPDATE SKIP LOCKED`,
so two passes never take the same member (SQLite has one writer). Due times
live in the database, so a restart loses nothing: what fell due while no worker
ran is due at the next pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database
from domain.models import Member
from domain.segments.due import DueTimes, write_due_times
from domain.segments.engine import SegmentEngine
from domain.segments.membership import Flip


class TimeFlipScheduler:
    """A background loop (domain.background.Loop) draining due members in batches."""

    name = "segment-time-flips"
    topics: frozenset[str] = frozenset()

    def __init__(
        self, db: Database, clock: Clock, engine: SegmentEngine, batch: int = 500, interval: float = 1.0
    ) -> None:
        self.db = db
        self.clock = clock
        self.engine = engine
        self.batch = batch
        self.interval = interval

    async def run_once(self) -> bool:
        """One batch in one transaction; True when the batch was full (more may be due)."""
        claimed, _ = await self.pass_once()
        return len(claimed) >= self.batch

    async def pass_once(self) -> tuple[list[int], list[Flip]]:
        """One pass: the member ids it claimed and the flips it wrote (committed on return)."""
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            claimed = await claim_due(uow.session, now, self.batch)
            flips: list[Flip] = []
            for program_id, member_ids in claimed.items():
                flips += await self._flip(uow.session, program_id, member_ids, now)
        return sorted(m for ids in claimed.values() for m in ids), flips

    async def _flip(
        self, session: AsyncSession, program_id: int, member_ids: Sequence[int], now: datetime
    ) -> list[Flip]:
        view = await self.engine.view(session, program_id)
        dynamic = [d for d in view.index.ordered if d.kind == "DYNAMIC" and d.condition is not None]
        if not dynamic and view.ladder is None:
            await write_due_times(session, dict.fromkeys(member_ids), DueTimes.EXACT)
            return []
        plans = dict.fromkeys(member_ids, dynamic) if dynamic else {}
        tiered = frozenset(member_ids) if view.ladder is not None else frozenset()
        return await self.engine.reevaluate(
            session, program_id, plans, now, due=DueTimes.EXACT, tiered=tiered
        )


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> dict[int, list[int]]:
    """Lock up to `limit` members due by `now`, earliest first, skipping those another pass holds.

    Returns their ids by program. The locks last until the transaction ends.
    """
    query = (
        select(Member.id, Member.program_id)
        .where(Member.segments_due_at <= now)
        .order_by(Member.segments_due_at, Member.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed: dict[int, list[int]] = defaultdict(list)
    for member_id, program_id in await session.execute(query):
        claimed[program_id].append(member_id)
    return dict(claimed)
