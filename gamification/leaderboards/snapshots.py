"""Frozen rankings in the database: at each period's close (for payouts) and at a priority window's start.

A snapshot is computed from the ledger, not read from Redis: it is exact even if
Redis was behind or lost, and computing it again gives the same rows. A
snapshot `as_of` an instant counts only what had been posted by then. Each
snapshot is stored once per (board, scope, period, start, as_of); concurrent
takers agree on the first one stored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.models import LeaderboardSnapshot, LeaderboardSnapshotEntry, Program
from domain.programs.calendar import program_timezone
from gamification.calendar import program_zone
from gamification.leaderboards.boards import BoardDefinition, board_by_key, program_boards
from gamification.leaderboards.scores import encode
from gamification.leaderboards.standings import Standing, Window, compute_standings, member_scopes
from gamification.periods import PeriodKind, period_end, period_start, shift


@dataclass(frozen=True)
class FrozenRank:
    #: The leaderboard_snapshots row holding the frozen top.
    snapshot_id: int
    #: The member's 1-based rank if within the frozen top `top_n`, else None.
    rank: int | None
    #: Members on the board at as_of (in the member's scope).
    size: int
    #: The member's rank in the frozen ranking when it was kept (the first max(top_n, snapshot_size)).
    position: int | None = None


def ranked(standings: list[Standing], start: datetime | None) -> list[Standing]:
    """Standings in board order, as ZREVRANGE gives them: packed score, then member id as text, descending."""
    return sorted(
        standings, key=lambda s: (encode(s.score, s.reached_at, start), str(s.member_id)), reverse=True
    )


async def freeze(
    session: AsyncSession,
    program_id: int,
    board: BoardDefinition,
    period: PeriodKind,
    start: datetime | None,
    as_of: datetime,
    limit: int,
    now: datetime,
) -> dict[str, int]:
    """Store the board's ranking per scope at `as_of` (top `limit` entries each); snapshot ids by scope.

    Idempotent: a scope already frozen for this instant keeps its first snapshot.
    """
    standings = await frozen_standings(session, program_id, board, period, start, as_of)
    return await store_frozen(session, program_id, board, period, start, as_of, standings, limit, now)


async def frozen_standings(
    session: AsyncSession,
    program_id: int,
    board: BoardDefinition,
    period: PeriodKind,
    start: datetime | None,
    as_of: datetime,
) -> dict[str, list[Standing]]:
    """The board's ranking per scope at `as_of`, in board order (reads only: a read transaction will do)."""
    tz = await program_zone(session, program_id)
    window = Window(start, period_end(period, start, tz), as_of)
    by_scope: dict[str, list[Standing]] = defaultdict(list)
    for standing in await compute_standings(session, program_id, board, window):
        by_scope[standing.scope].append(standing)
    return {scope: ranked(standings, start) for scope, standings in by_scope.items()}


async def store_frozen(
    session: AsyncSession,
    program_id: int,
    board: BoardDefinition,
    period: PeriodKind,
    start: datetime | None,
    as_of: datetime,
    standings: dict[str, list[Standing]],
    limit: int,
    now: datetime,
) -> dict[str, int]:
    """Store `frozen_standings` (top `limit` entries per scope); snapshot ids by scope. Idempotent."""
    return {
        scope: await _store(session, program_id, board, scope, period, start, as_of, ranking, limit, now)
        for scope, ranking in standings.items()
    }


async def frozen_rank(
    session: AsyncSession,
    program_id: int,
    board_key: str,
    period: PeriodKind,
    as_of: datetime,
    top_n: int,
    member_id: int,
    now: datetime | None = None,
) -> FrozenRank:
    """The member's rank among the top `top_n` of the board (in its scope) as it stood at `as_of`."""
    board = await board_by_key(session, program_id, board_key)
    board.require_period(period)
    tz = await program_zone(session, program_id)
    start = period_start(period, as_of, tz)
    scope = (await member_scopes(session, program_id, board, [member_id])).get(member_id)
    if scope is None:
        return FrozenRank(0, None, 0)
    snapshot = await _find(session, program_id, _label(board.key, scope, period, start, as_of))
    if snapshot is None:
        await freeze(
            session, program_id, board, period, start, as_of, max(top_n, board.snapshot_size), now or as_of
        )
        snapshot = await _find(session, program_id, _label(board.key, scope, period, start, as_of))
    if snapshot is None:  # nobody in the member's scope had scored by then
        return FrozenRank(0, None, 0)
    position = await session.scalar(
        select(LeaderboardSnapshotEntry.rank).where(
            LeaderboardSnapshotEntry.snapshot_id == snapshot.id,
            LeaderboardSnapshotEntry.member_id == member_id,
        )
    )
    rank = position if position is not None and position <= top_n else None
    return FrozenRank(snapshot.id, rank, snapshot.size, position)


@dataclass(frozen=True)
class _Close:
    """A board's period that has ended and is not frozen yet, with its ranking at the close."""

    board: BoardDefinition
    period: PeriodKind
    start: datetime
    as_of: datetime
    standings: dict[str, list[Standing]]


class PeriodCloser:
    """Freezes every board's just-closed periods (all scopes) once they have ended.

    A program's closes are computed in a read transaction and stored in a short unit of work of
    their own: on SQLite a pass never holds the database's write lock while it ranks (a first
    pass over hundreds of programs took it for tens of seconds, and other processes' writes failed).
    """

    name = "leaderboard-closer"
    topics: frozenset[str] = frozenset()

    def __init__(self, db: Database, clock: Clock, interval: float = 60.0) -> None:
        self.db = db
        self.clock = clock
        self.interval = interval

    async def run_once(self) -> bool:
        await self.close_ended(self.clock.now())
        return False

    async def close_ended(self, now: datetime, program_ids: Sequence[int] | None = None) -> None:
        """Freeze the periods that ended by `now` and are not frozen yet, of the programs
        `program_ids` (None: every program, as each pass of the loop does)."""
        chosen = select(Program.id, Program.settings).order_by(Program.id)
        if program_ids is not None:
            chosen = chosen.where(Program.id.in_(program_ids))
        async with self.db.read() as session:
            programs = (await session.execute(chosen)).all()
        for program_id, settings in programs:
            await self.close(program_id, program_timezone(settings), now)

    async def close(self, program_id: int, tz: ZoneInfo, now: datetime) -> int:
        """Freeze the program's periods that ended by `now` and are not frozen yet; how many."""
        async with self.db.read() as session:
            closes = await _due_closes(session, program_id, tz, now)
        if closes:
            async with self.db.unit_of_work() as uow:
                for close in closes:
                    await store_frozen(
                        uow.session,
                        program_id,
                        close.board,
                        close.period,
                        close.start,
                        close.as_of,
                        close.standings,
                        close.board.snapshot_size,
                        now,
                    )
                    await _mark_closed(
                        uow.session, program_id, close.board.key, close.period, close.start, close.as_of, now
                    )
        return len(closes)


async def _due_closes(session: AsyncSession, program_id: int, tz: ZoneInfo, now: datetime) -> list[_Close]:
    """The program's just-ended periods not frozen yet, ranked as they stood at their close."""
    closes = []
    for board in (await program_boards(session, program_id)).values():
        for period in board.periods:
            current = period_start(period, now, tz)
            if current is None:
                continue
            closed = shift(period, current, -1, tz)
            if await _find(session, program_id, _label(board.key, "*", period, closed, current)) is None:
                standings = await frozen_standings(session, program_id, board, period, closed, current)
                closes.append(_Close(board, period, closed, current, standings))
    return closes


async def _store(
    session: AsyncSession,
    program_id: int,
    board: BoardDefinition,
    scope: str,
    period: PeriodKind,
    start: datetime | None,
    as_of: datetime,
    standings: list[Standing],
    limit: int,
    now: datetime,
) -> int:
    label = _label(board.key, scope, period, start, as_of)
    table = LeaderboardSnapshot.__table__
    inserted = await session.scalar(
        insert_for(session, table)
        .values(
            program_id=program_id,
            label=label,
            board_key=board.key,
            scope=scope,
            period=period.value,
            period_start=start,
            as_of=as_of,
            size=len(standings),
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(table.c.id)
    )
    if inserted is None:
        existing = await _find(session, program_id, label)
        assert existing is not None
        return existing.id
    rows = [
        {
            "program_id": program_id,
            "snapshot_id": inserted,
            "rank": rank,
            "member_id": s.member_id,
            "score": s.score,
            "reached_at": s.reached_at,
        }
        for rank, s in enumerate(standings[:limit], start=1)
    ]
    if rows:
        await session.execute(insert(LeaderboardSnapshotEntry), rows)
    return int(inserted)


async def _mark_closed(
    session: AsyncSession,
    program_id: int,
    board_key: str,
    period: PeriodKind,
    start: datetime,
    as_of: datetime,
    now: datetime,
) -> None:
    """A row with scope "*" says the period was frozen (also when nobody scored in it)."""
    await session.execute(
        insert_for(session, LeaderboardSnapshot.__table__)
        .values(
            program_id=program_id,
            label=_label(board_key, "*", period, start, as_of),
            board_key=board_key,
            scope="*",
            period=period.value,
            period_start=start,
            as_of=as_of,
            size=0,
            created_at=now,
        )
        .on_conflict_do_nothing()
    )


async def _find(session: AsyncSession, program_id: int, label: str) -> LeaderboardSnapshot | None:
    return await session.scalar(
        select(LeaderboardSnapshot).where(
            LeaderboardSnapshot.program_id == program_id, LeaderboardSnapshot.label == label
        )
    )


def _label(board: str, scope: str, period: PeriodKind, start: datetime | None, as_of: datetime) -> str:
    opened = "all" if start is None else start.isoformat()
    return f"{board}|{scope}|{period.value}|{opened}|{as_of.isoformat()}"
