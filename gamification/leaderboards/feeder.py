"""The feeder: keeps the Redis boards equal to the ledger, after commit, exactly.

Every change that can move a standing writes a `standings_feed` row (member, when
it counts) in its own transaction. The feeder takes a batch of rows, recomputes
the marked members' absolute scores from the database for each affected board
and period (in a read transaction), ZADDs them (ZREM for members with nothing left),
then deletes the rows it read (a short write: on SQLite no lock is held while Redis is
written). Writing absolute scores makes a repeated batch harmless: a crash between the
Redis write and the delete only repeats work, and no increment is ever lost or applied
twice; a change committed meanwhile has a row of its own, fed by the next batch.
One process at a time feeds (a Redis lease); the others stand by.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database
from domain.models import StandingsFeed
from domain.redis_store import RedisStore
from domain.standings import STANDINGS
from gamification.calendar import program_zone
from gamification.leaderboards.boards import BoardDefinition, BoardScope, program_boards
from gamification.leaderboards.rebuild import DriftReport, reconcile
from gamification.leaderboards.scores import encode
from gamification.leaderboards.standings import SEGMENT_SCOPE, Window, compute_standings, member_scopes
from gamification.leaderboards.store import BoardKey, Update, apply_updates, feeder_lease
from gamification.periods import PeriodKind, period_end, period_start, shift

#: Events may be up to 5 minutes in the future (domain/events/validation.py).
FUTURE_SLACK = timedelta(minutes=5)

Mark = tuple[int, datetime]  # (member id, when the change counts)


class LeaseLost(Exception):
    """Another holder (a rebuild) took the lease: roll back, keep the rows."""


@dataclass
class _Pending:
    scores: dict[int, int] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    expire_at: datetime | None = None


class StandingsFeeder:
    name = "leaderboard-feeder"
    topics = frozenset({STANDINGS})

    def __init__(
        self,
        db: Database,
        redis: RedisStore,
        clock: Clock,
        *,
        batch: int = 2000,
        interval: float = 1.0,
        reconcile_every: float | None = 3600.0,
    ) -> None:
        self.db = db
        self.redis = redis
        self.clock = clock
        self.batch = batch
        self.interval = interval
        self.reconcile_every = reconcile_every
        self.lease = feeder_lease(redis)
        self._next_reconcile = time.monotonic() + (reconcile_every or 0)
        #: What the last periodic reconciliation found (None before the first).
        self.last_drift: DriftReport | None = None

    async def run_once(self) -> bool:
        if not await self.lease.hold():
            return False
        try:
            more = await self._feed()
            if not more and self.reconcile_every and time.monotonic() >= self._next_reconcile:
                self._next_reconcile = time.monotonic() + self.reconcile_every
                async with self.db.read() as session:
                    self.last_drift = await reconcile(session, self.redis, self.clock.now(), self.lease)
            return more
        except LeaseLost:
            return False  # the rows stay and are fed once the lease is back

    async def _feed(self) -> bool:
        """One batch: read and rank in a read transaction, write Redis, then delete the rows fed in a
        unit of work of its own (no transaction is held while Redis is written)."""
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(
                        StandingsFeed.id, StandingsFeed.program_id, StandingsFeed.member_id, StandingsFeed.at
                    )
                    .order_by(StandingsFeed.id)
                    .limit(self.batch)
                )
            ).all()
            if not rows:
                return False
            marks: dict[int, list[Mark]] = defaultdict(list)
            for _, program_id, member_id, at in rows:
                marks[program_id].append((member_id, at))
            updates = {
                program_id: await self.updates(session, program_id, program_marks)
                for program_id, program_marks in marks.items()
            }
        for program_updates in updates.values():
            if not await apply_updates(self.redis.client, program_updates, self.lease):
                raise LeaseLost  # a rebuild took the boards over: the rows stay
        async with self.db.unit_of_work() as uow:
            await uow.session.execute(delete(StandingsFeed).where(StandingsFeed.id.in_([r.id for r in rows])))
        return len(rows) == self.batch

    async def updates(
        self, session: AsyncSession, program_id: int, marks: Sequence[Mark]
    ) -> dict[str, Update]:
        """What to write to Redis so the marked members' standings equal the database's."""
        tz = await program_zone(session, program_id)
        now = self.clock.now()
        pending: dict[str, _Pending] = defaultdict(_Pending)
        for board in (await program_boards(session, program_id)).values():
            members = {member_id for member_id, _ in marks}
            scopes = await member_scopes(session, program_id, board, members)
            for period in board.periods:
                for start, marked in _retained_starts(board, period, marks, now, tz).items():
                    await self._recompute(
                        session, program_id, board, period, start, marked, scopes, tz, pending
                    )
        return {key: Update(p.scores, p.removed, p.expire_at) for key, p in pending.items()}

    async def _recompute(
        self,
        session: AsyncSession,
        program_id: int,
        board: BoardDefinition,
        period: PeriodKind,
        start: datetime | None,
        marked: set[int],
        scopes: dict[int, str],
        tz: ZoneInfo,
        pending: dict[str, _Pending],
    ) -> None:
        end = period_end(period, start, tz)
        expire_at = None if start is None else shift(period, start, board.keep_periods + 1, tz)

        def key(scope: str) -> _Pending:
            slot = pending[BoardKey(program_id, board.key, scope, period, start).name(self.redis)]
            slot.expire_at = expire_at
            return slot

        standings = await compute_standings(session, program_id, board, Window(start, end), marked)
        for standing in standings:
            key(standing.scope).scores[standing.member_id] = encode(
                standing.score, standing.reached_at, start
            )
        counted = {s.member_id for s in standings}
        for member_id in marked - counted:
            scope = scopes.get(member_id)
            if scope is not None:
                key(scope).removed.add(member_id)
            elif board.scope == BoardScope.SEGMENT:  # left the segment: off its board
                key(SEGMENT_SCOPE).removed.add(member_id)


def _retained_starts(
    board: BoardDefinition, period: PeriodKind, marks: Sequence[Mark], now: datetime, tz: ZoneInfo
) -> dict[datetime | None, set[int]]:
    """The period starts the marks fall in, each with its members; periods no longer kept are skipped."""
    current = period_start(period, now, tz)
    latest = period_start(period, now + FUTURE_SLACK, tz)
    oldest = None if current is None else shift(period, current, -board.keep_periods, tz)
    starts: dict[datetime | None, set[int]] = defaultdict(set)
    for member_id, at in marks:
        start = period_start(period, at, tz)
        if start is None or (oldest is not None and latest is not None and oldest <= start <= latest):
            starts[start].add(member_id)
    return starts
