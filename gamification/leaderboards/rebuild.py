"""Rebuild boards from the ledger, and reconcile them: Redis is derived data, the database the truth.

`rebuild` takes the feeder's lease over (the feeder's fenced writes fail until it
is released, and its rows wait), computes every kept period of every board from
the database, writes each into a fresh key and RENAMEs it over the live one, and
deletes live keys that should not exist. `reconcile` compares the current periods
with the database, counts what differs (missing, extra, wrong scores) and repairs
it; it runs inside the feeder's loop, so it never races the feeder.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.engine import Database
from domain.errors import Conflict, NotFound
from domain.models import Leaderboard, Program, StandingsFeed
from domain.redis_store import Lease, RedisStore
from gamification.calendar import program_zone
from gamification.leaderboards.boards import POINTS_BOARD, BoardDefinition, board_by_key, program_boards
from gamification.leaderboards.scores import encode
from gamification.leaderboards.standings import Window, compute_standings
from gamification.leaderboards.store import (
    BoardKey,
    Update,
    apply_updates,
    board_pattern,
    board_tag,
    feeder_lease,
)
from gamification.periods import PeriodKind, period_end, period_start, shift

log = logging.getLogger(__name__)

#: (done, total, what): called after each board period is rebuilt.
Progress = Callable[[int, int, str], None]
_CHUNK = 10_000


class LeaseTakenOver(Conflict):
    """A later rebuild took the feeder's lease over: this one stops before swapping its keys in."""


@dataclass(frozen=True)
class Period:
    board: BoardDefinition
    kind: PeriodKind
    start: datetime | None
    end: datetime | None
    expire_at: datetime | None


@dataclass
class RebuildReport:
    periods: int = 0
    keys: int = 0
    entries: int = 0


@dataclass
class DriftReport:
    keys: int = 0
    entries: int = 0
    missing: int = 0
    extra: int = 0
    wrong: int = 0

    @property
    def drift(self) -> int:
        return self.missing + self.extra + self.wrong


async def kept_periods(
    session: AsyncSession,
    program_id: int,
    now: datetime,
    board_key: str | None = None,
    current_only: bool = False,
) -> list[Period]:
    """Every period the program's boards keep in Redis (only the open ones with `current_only`)."""
    tz = await program_zone(session, program_id)
    periods = []
    for board in (await program_boards(session, program_id)).values():
        if board_key is not None and board.key != board_key:
            continue
        for kind in board.periods:
            current = period_start(kind, now, tz)
            if current is None:
                periods.append(Period(board, kind, None, None, None))
                continue
            back = 0 if current_only else board.keep_periods
            for n in range(-back, 1):
                start = shift(kind, current, n, tz)
                expire = shift(kind, start, board.keep_periods + 1, tz)
                periods.append(Period(board, kind, start, period_end(kind, start, tz), expire))
    return periods


async def expected(
    session: AsyncSession, redis: RedisStore, program_id: int, period: Period
) -> dict[str, dict[int, int]]:
    """Redis key -> {member id: packed score} as the database says the period stands."""
    keys: dict[str, dict[int, int]] = defaultdict(dict)
    window = Window(period.start, period.end)
    for standing in await compute_standings(session, program_id, period.board, window):
        key = BoardKey(program_id, period.board.key, standing.scope, period.kind, period.start).name(redis)
        keys[key][standing.member_id] = encode(standing.score, standing.reached_at, period.start)
    return keys


async def rebuild(
    db: Database,
    redis: RedisStore,
    now: datetime,
    *,
    program_ids: list[int] | None = None,
    board_key: str | None = None,
    progress: Progress | None = None,
) -> RebuildReport:
    """Reconstruct boards exactly from the ledger; the feeder pauses meanwhile and catches up after.

    NotFound when `board_key` names no board of the programs.
    """
    if board_key is not None:
        await _require_board(db, program_ids, board_key)
    lease = feeder_lease(redis, ttl=60.0)
    await lease.take_over()
    report = RebuildReport()
    try:
        async with db.read() as session:
            ids = program_ids or list((await session.scalars(select(Program.id).order_by(Program.id))).all())
            work = [(pid, p) for pid in ids for p in await kept_periods(session, pid, now, board_key)]
            built: dict[tuple[int, str], set[str]] = defaultdict(set)
            for done, (program_id, period) in enumerate(work, start=1):
                await lease.take_over()  # renew
                for key, scores in (await expected(session, redis, program_id, period)).items():
                    await _write_fresh(redis, key, scores, period.expire_at)
                    built[(program_id, period.board.key)].add(key)
                    report.keys += 1
                    report.entries += len(scores)
                report.periods += 1
                if progress is not None:
                    progress(done, len(work), f"{period.board.key} {period.kind.value} {_when(period.start)}")
            boards = {(pid, p.board.key) for pid, p in work}
        for program_id, key in boards:
            await _swap_in(redis, lease, program_id, key, built[(program_id, key)])
    finally:
        await lease.release()
    return report


async def _require_board(db: Database, program_ids: list[int] | None, board_key: str) -> None:
    """NotFound unless the one program given has the board, or else any of the programs does."""
    async with db.read() as session:
        if program_ids is not None and len(program_ids) == 1:
            await board_by_key(session, program_ids[0], board_key, field="board")
            return
        if board_key == POINTS_BOARD.key:  # built in: every program has it
            return
        query = select(Leaderboard.id).where(Leaderboard.key == board_key).limit(1)
        if program_ids:  # none or [] stand for every program, as in `rebuild`
            query = query.where(Leaderboard.program_id.in_(program_ids))
        if await session.scalar(query) is None:
            raise NotFound(f"board: no leaderboard {board_key[:70]!r} in any program")


async def reconcile(
    session: AsyncSession,
    redis: RedisStore,
    now: datetime,
    fence: Lease | None = None,
    program_ids: list[int] | None = None,
) -> DriftReport:
    """Compare the open periods with the database and repair what differs (members with feed rows
    still pending are skipped: the feeder is about to write them)."""
    report = DriftReport()
    ids = program_ids or (await session.scalars(select(Program.id).order_by(Program.id))).all()
    for program_id in ids:
        pending = set(
            (
                await session.scalars(
                    select(StandingsFeed.member_id).where(StandingsFeed.program_id == program_id)
                )
            ).all()
        )
        for period in await kept_periods(session, program_id, now, current_only=True):
            wanted = await expected(session, redis, program_id, period)
            live = await _live_keys(redis, program_id, period)
            updates: dict[str, Update] = {}
            for key in set(wanted) | live:
                scores = wanted.get(key, {})
                rows = cast(list[tuple[str, float]], await redis.client.zrange(key, 0, -1, withscores=True))
                stored = {int(m): int(s) for m, s in rows}
                missing = {m: s for m, s in scores.items() if m not in stored and m not in pending}
                wrong = {
                    m: s for m, s in scores.items() if m in stored and stored[m] != s and m not in pending
                }
                extra = [m for m in stored if m not in scores and m not in pending]
                report.keys += 1
                report.entries += len(scores)
                report.missing += len(missing)
                report.wrong += len(wrong)
                report.extra += len(extra)
                if missing or wrong or extra:
                    updates[key] = Update(missing | wrong, extra, period.expire_at)
            if updates:
                await apply_updates(redis.client, updates, fence)
    if report.drift:
        log.warning(
            "leaderboards drifted from the ledger (repaired): %d missing, %d extra, %d wrong of %d entries",
            report.missing,
            report.extra,
            report.wrong,
            report.entries,
        )
    return report


async def _write_fresh(
    redis: RedisStore, key: str, scores: dict[int, int], expire_at: datetime | None
) -> None:
    fresh = f"{key}:rebuild"
    await redis.client.delete(fresh)
    items = list(scores.items())
    for i in range(0, len(items), _CHUNK):
        await redis.client.zadd(fresh, {str(m): s for m, s in items[i : i + _CHUNK]})
    if expire_at is not None:
        await redis.client.expireat(fresh, int(expire_at.timestamp()))


async def drop_board(redis: RedisStore, program_id: int, board_key: str) -> None:
    """Drop every key of a board whose definition is gone (the feeder writes no more to it; its keys
    share the board's hash tag, so one DEL serves a cluster too)."""
    pattern = board_pattern(redis, program_id, board_key)
    keys = [k async for k in redis.client.scan_iter(match=pattern, count=1000)]
    if keys:
        await redis.client.delete(*keys)


async def _swap_in(redis: RedisStore, lease: Lease, program_id: int, board_key: str, built: set[str]) -> None:
    """Rename the fresh keys over the live ones and drop live keys the database has nothing for.

    First the board's fence is raised to the rebuild's epoch: a feeder pass that lost the lease can
    no longer write there (what it wrote before is renamed over)."""
    if not await lease.claim(board_tag(program_id, board_key)):
        raise LeaseTakenOver(
            f"board {board_key[:70]!r}: another rebuild started meanwhile and builds it; this one stopped"
        )
    live = {
        k async for k in redis.client.scan_iter(match=board_pattern(redis, program_id, board_key), count=1000)
    }
    for key in built:
        await redis.client.rename(f"{key}:rebuild", key)
    stale = [k for k in live if k not in built and not k.endswith(":rebuild")]
    if stale:
        await redis.client.delete(*stale)


async def _live_keys(redis: RedisStore, program_id: int, period: Period) -> set[str]:
    """The live keys of one board period, all scopes (organizations may have keys the database lost)."""
    sample = BoardKey(program_id, period.board.key, "*", period.kind, period.start).name(redis)
    pattern = sample.replace("[", "\\[")
    return {k async for k in redis.client.scan_iter(match=pattern, count=1000) if not k.endswith(":rebuild")}


def _when(start: datetime | None) -> str:
    return "all time" if start is None else start.date().isoformat()


async def reconcile_now(
    db: Database, redis: RedisStore, now: datetime, program_ids: list[int] | None = None
) -> DriftReport:
    """One reconciliation outside the feeder (the CLI): the feeder pauses meanwhile."""
    lease = feeder_lease(redis, ttl=60.0)
    await lease.take_over()
    try:
        async with db.read() as session:
            return await reconcile(session, redis, now, lease, program_ids)
    finally:
        await lease.release()
