"""Reading boards (top, around a member, one entry, size) and defining them.

Open and kept periods are read from Redis. A period older than the board keeps
is read from its frozen close snapshot in the database (its first
`snapshot_size` ranks; on the read replica once it holds the snapshot). Unknown
boards are NOT_FOUND; bad periods, starts and limits are BAD_USER_INPUT naming
the argument; a member not on a board has no entry and nothing around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import ProgramCalendarChanged
from domain.clock import Clock
from domain.db.engine import Database, collect
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.governance.audit_log import record_change
from domain.models import (
    Leaderboard,
    LeaderboardSnapshot,
    LeaderboardSnapshotEntry,
    Member,
    Organization,
    Program,
)
from domain.programs.calendar import UTC_ZONE, parse_timezone
from domain.programs.service import record_program_setting
from domain.redis_store import RedisStore
from gamification.calendar import program_zone
from gamification.leaderboards import store
from gamification.leaderboards.boards import (
    POINTS_BOARD,
    BoardDefinition,
    BoardScope,
    audited_board,
    board_by_key,
    definition_of,
    program_boards,
    store_board,
)
from gamification.leaderboards.rebuild import (
    DriftReport,
    Progress,
    RebuildReport,
    drop_board,
    rebuild,
    reconcile_now,
)
from gamification.leaderboards.standings import PROGRAM_SCOPE, SEGMENT_SCOPE, organization_scope
from gamification.leaderboards.store import BoardKey, RankedMember
from gamification.periods import PeriodKind, is_period_start, period_start, shift

MAX_FIRST = 500
MAX_OFFSET = 1_000_000
MAX_RADIUS = 50


@dataclass(frozen=True)
class BoardView:
    """One ranking: a board, a period start and a scope; `snapshot_id` when served from the database."""

    program_id: int
    board: BoardDefinition
    period: PeriodKind
    start: datetime | None
    scope: str
    redis_key: str
    snapshot_id: int | None = None


class LeaderboardService:
    def __init__(self, db: Database, redis: RedisStore, clock: Clock) -> None:
        self.db = db
        self.redis = redis
        self.clock = clock

    async def boards(self, program_id: int) -> list[BoardDefinition]:
        async with self.db.read() as session:
            return list((await program_boards(session, program_id)).values())

    async def listing(self, program_id: int, member_id: int | None) -> list[BoardView]:
        """Every board at ALL_TIME (else its first period). A member sees the public ones, ORGANIZATION
        boards at its own organization (none without one); others get ORGANIZATION boards per
        organization from `view`."""
        views = []
        for board in await self.boards(program_id):
            if member_id is not None and not board.public:
                continue
            period = PeriodKind.ALL_TIME if PeriodKind.ALL_TIME in board.periods else board.periods[0]
            if board.scope == BoardScope.ORGANIZATION:
                async with self.db.read() as session:
                    organization = member_id and await session.scalar(
                        select(Member.organization_id).where(Member.id == member_id)
                    )
                if not organization:
                    continue
            views.append(await self.view(program_id, board.key, period, member_id=member_id))
        return views

    async def view(
        self,
        program_id: int,
        key: str,
        period: PeriodKind,
        start: datetime | None = None,
        organization_external_id: str | None = None,
        member_id: int | None = None,
        frozen: bool = False,
    ) -> BoardView:
        """The ranking asked for. A member (`member_id`) reads public boards only, and on ORGANIZATION
        boards its own organization's ranking (FORBIDDEN otherwise).

        A closed period is read live from Redis while the board keeps it, from its close snapshot
        after that, or with `frozen` (the ranking payouts use: late corrections excluded)."""
        if member_id is not None and organization_external_id is not None:
            raise Forbidden("organizationExternalId: a member token reads its own organization's ranking")
        async with self.db.read() as session:
            board = await board_by_key(session, program_id, key)
            if member_id is not None and not board.public:
                raise Forbidden(f"key: leaderboard {key!r} is not public")
            board.require_period(period)
            # ALL_TIME has no calendar: the program's timezone is read only for the other periods
            tz = UTC_ZONE if period == PeriodKind.ALL_TIME else await program_zone(session, program_id)
            current = period_start(period, self.clock.now(), tz)
            if period == PeriodKind.ALL_TIME and start is not None:
                raise InvalidInput("periodStart: ALL_TIME has no period start; leave it out")
            if start is None or current is None:
                start = current
            elif not is_period_start(period, start, tz):
                raise InvalidInput(
                    f"periodStart: {start.isoformat()} does not start a {period.value} period; "
                    f"the period containing it starts at {period_start(period, start, tz).isoformat()}"  # type: ignore[union-attr]
                )
            elif start > current:
                raise InvalidInput(f"periodStart: {start.isoformat()} is in the future")
            scope = await self._scope(session, program_id, board, organization_external_id, member_id)
            view = BoardView(
                program_id,
                board,
                period,
                start,
                scope,
                BoardKey(program_id, key, scope, period, start).name(self.redis),
            )
            if frozen and (start is None or current is None or start >= current):
                raise InvalidInput("frozen: only a closed period has a snapshot; give a past periodStart")
            if frozen or (
                start is not None
                and current is not None
                and start < shift(period, current, -board.keep_periods, tz)
            ):
                return await self._frozen(session, view)
            return view

    async def _scope(
        self,
        session: AsyncSession,
        program_id: int,
        board: BoardDefinition,
        organization_external_id: str | None,
        member_id: int | None,
    ) -> str:
        if board.scope == BoardScope.PROGRAM:
            return PROGRAM_SCOPE
        if board.scope == BoardScope.SEGMENT:
            return SEGMENT_SCOPE
        if organization_external_id is not None:
            org = await session.scalar(
                select(Organization.id).where(
                    Organization.program_id == program_id,
                    Organization.external_id == organization_external_id,
                )
            )
            if org is None:
                raise NotFound(f"organizationExternalId: no organization {organization_external_id[:70]!r}")
            return organization_scope(org)
        if member_id is not None:
            org = await session.scalar(select(Member.organization_id).where(Member.id == member_id))
            if org is not None:
                return organization_scope(org)
        raise InvalidInput(
            f"organizationExternalId: board {board.key!r} ranks each organization separately; say which"
        )

    async def _frozen(self, session: AsyncSession, view: BoardView) -> BoardView:
        snapshot = await session.scalar(
            select(LeaderboardSnapshot.id)
            .where(
                LeaderboardSnapshot.program_id == view.program_id,
                LeaderboardSnapshot.board_key == view.board.key,
                LeaderboardSnapshot.scope == view.scope,
                LeaderboardSnapshot.period == view.period.value,
                LeaderboardSnapshot.period_start == view.start,
            )
            .order_by(LeaderboardSnapshot.as_of.desc())
            .limit(1)
        )
        if snapshot is None:
            started = view.start.isoformat() if view.start else ""
            raise NotFound(
                f"periodStart: the {view.period.value} period starting {started} "
                f"is older than the {view.board.keep_periods} periods board {view.board.key!r} keeps, "
                "and no snapshot of it was taken"
            )
        return BoardView(
            view.program_id, view.board, view.period, view.start, view.scope, view.redis_key, snapshot
        )

    async def top(self, view: BoardView, first: int, offset: int) -> list[RankedMember]:
        if not 0 <= first <= MAX_FIRST:
            raise InvalidInput(f"first: must be between 0 and {MAX_FIRST}, got {first}")
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput(f"offset: must be between 0 and {MAX_OFFSET}, got {offset}")
        if first == 0:
            return []
        if view.snapshot_id is not None:
            return await self._snapshot_ranks(view.snapshot_id, offset + 1, offset + first)
        return await store.top(self.redis.client, view.redis_key, first, offset)

    async def around(self, view: BoardView, member_external_id: str, radius: int) -> list[RankedMember]:
        if not 0 <= radius <= MAX_RADIUS:
            raise InvalidInput(f"radius: must be between 0 and {MAX_RADIUS}, got {radius}")
        member_id = await self._member_id(view.program_id, member_external_id)
        if member_id is None:
            return []
        if view.snapshot_id is None:
            return await store.around(self.redis.client, view.redis_key, member_id, radius)
        mine = await self._snapshot_rank(view.snapshot_id, member_id)
        if mine is None:
            return []
        return await self._snapshot_ranks(view.snapshot_id, max(mine.rank - radius, 1), mine.rank + radius)

    async def entry(self, view: BoardView, member_external_id: str) -> RankedMember | None:
        member_id = await self._member_id(view.program_id, member_external_id)
        if member_id is None:
            return None
        if view.snapshot_id is not None:
            return await self._snapshot_rank(view.snapshot_id, member_id)
        return await store.entry(self.redis.client, view.redis_key, member_id)

    async def size(self, view: BoardView) -> int:
        if view.snapshot_id is not None:
            async with self._snapshot_read(view.snapshot_id) as session:
                return int(
                    await session.scalar(
                        select(LeaderboardSnapshot.size).where(LeaderboardSnapshot.id == view.snapshot_id)
                    )
                    or 0
                )
        return await store.size(self.redis.client, view.redis_key)

    async def set_board(self, program_id: int, board: BoardDefinition, *, actor: str) -> BoardDefinition:
        """Create or replace a board and build its rankings from the ledger at once (the cost grows
        with the program's history); the feeder keeps it current from then on."""
        async with self.db.unit_of_work() as uow:
            before = (await program_boards(uow.session, program_id)).get(board.key)
            await store_board(uow.session, program_id, board, self.clock.now())
            await uow.session.flush()
            stored = await board_by_key(uow.session, program_id, board.key)
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="setLeaderboard",
                at=self.clock.now(),
                target=board.key,
                before=None if before is None else audited_board(before),
                after=audited_board(stored),
            )
        await rebuild(self.db, self.redis, self.clock.now(), program_ids=[program_id], board_key=board.key)
        async with self.db.read() as session:
            return await board_by_key(session, program_id, board.key)

    async def delete_board(self, program_id: int, key: str, *, actor: str) -> bool:
        """Delete a defined board (the built-in `points` board comes back when its definition goes)."""
        async with self.db.unit_of_work() as uow:
            row = await uow.session.scalar(
                select(Leaderboard).where(Leaderboard.program_id == program_id, Leaderboard.key == key)
            )
            if row is None:
                if key == POINTS_BOARD.key:
                    raise InvalidInput("key: the built-in board 'points' cannot be deleted")
                raise NotFound(f"key: no leaderboard {key[:70]!r} in this program")
            before = audited_board(definition_of(row))
            await uow.session.delete(row)
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="deleteLeaderboard",
                at=self.clock.now(),
                target=key,
                before=before,
            )
        if key == POINTS_BOARD.key:  # the built-in board its definition replaced comes back
            await rebuild(self.db, self.redis, self.clock.now(), program_ids=[program_id], board_key=key)
        else:
            await drop_board(self.redis, program_id, key)
        return True

    async def set_timezone(self, program_id: int, timezone: str, *, actor: str) -> Program:
        """Set the program's calendar timezone (period boundaries of boards and challenges) and rebuild
        its boards under the new boundaries."""
        parse_timezone(timezone)
        async with self.db.unit_of_work() as uow:
            program = await uow.session.get(Program, program_id, with_for_update=True)
            if program is None:
                raise NotFound(f"program {program_id} does not exist")
            before = program.settings.get("timezone", UTC_ZONE.key)
            program.settings = {**program.settings, "timezone": timezone}
            await uow.session.flush()  # the segment engine reads the new zone in this transaction
            await record_program_setting(
                uow,
                program,
                actor=actor,
                action="setProgramTimezone",
                at=self.clock.now(),
                before={"timezone": before},
                after={"timezone": timezone},
            )
            collect(uow.session, ProgramCalendarChanged(program_id, self.clock.now()))
        await rebuild(self.db, self.redis, self.clock.now(), program_ids=[program_id])
        return program

    async def rebuild(
        self,
        program_ids: list[int] | None = None,
        board_key: str | None = None,
        progress: Progress | None = None,
    ) -> RebuildReport:
        """Reconstruct every kept period of the boards from the ledger (`loyalty leaderboards rebuild`)."""
        return await rebuild(
            self.db,
            self.redis,
            self.clock.now(),
            program_ids=program_ids,
            board_key=board_key,
            progress=progress,
        )

    async def reconcile(self, program_ids: list[int] | None = None) -> DriftReport:
        """Compare the open periods with the ledger and repair them; what differed is reported."""
        return await reconcile_now(self.db, self.redis, self.clock.now(), program_ids)

    async def _member_id(self, program_id: int, external_id: str) -> int | None:
        async with self.db.read() as session:
            member_id: int | None = await session.scalar(
                select(Member.id).where(
                    Member.program_id == program_id,
                    Member.external_id == external_id,
                    Member.erased_at.is_(None),
                )
            )
        return member_id

    @asynccontextmanager
    async def _snapshot_read(self, snapshot_id: int) -> AsyncIterator[AsyncSession]:
        """A read of a kept snapshot, which never changes once written: on the read replica once it
        holds the snapshot (its row and entries commit together, so the row there means all of it),
        else on the primary (a snapshot written within the replication delay, or no replica). So a
        snapshot read is never stale, only served by whichever holds it."""
        async with self.db.lagging_read() as session:
            held = await session.scalar(
                select(LeaderboardSnapshot.id).where(LeaderboardSnapshot.id == snapshot_id)
            )
            if held is not None:
                yield session
                return
        async with self.db.read() as session:
            yield session

    async def _snapshot_ranks(self, snapshot_id: int, low: int, high: int) -> list[RankedMember]:
        async with self._snapshot_read(snapshot_id) as session:
            rows = await session.execute(
                select(
                    LeaderboardSnapshotEntry.rank,
                    LeaderboardSnapshotEntry.member_id,
                    LeaderboardSnapshotEntry.score,
                )
                .where(
                    LeaderboardSnapshotEntry.snapshot_id == snapshot_id,
                    LeaderboardSnapshotEntry.rank.between(low, high),
                )
                .order_by(LeaderboardSnapshotEntry.rank)
            )
            return [RankedMember(rank, member_id, score) for rank, member_id, score in rows.all()]

    async def _snapshot_rank(self, snapshot_id: int, member_id: int) -> RankedMember | None:
        async with self._snapshot_read(snapshot_id) as session:
            row = (
                await session.execute(
                    select(LeaderboardSnapshotEntry.rank, LeaderboardSnapshotEntry.score).where(
                        LeaderboardSnapshotEntry.snapshot_id == snapshot_id,
                        LeaderboardSnapshotEntry.member_id == member_id,
                    )
                )
            ).first()
        return None if row is None else RankedMember(row[0], member_id, row[1])
