"""SQLite has one write lock per database: reads and background passes must not hold it while they
compute or wait on Redis, or every writer (another server process, a request) queues behind them
and fails after the 30 s busy timeout ("database is locked", a 503)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from api.runtime import Services
from domain.db.engine import UnitOfWork
from domain.live.relay import ChangeRelay
from domain.models import LeaderboardSnapshot, Member, Program, StandingsFeed
from domain.standings import mark_standings
from fraud.compliance import ComplianceSweeper
from gamification.leaderboards import feeder, snapshots
from gamification.leaderboards.boards import POINTS_BOARD
from gamification.leaderboards.snapshots import PeriodCloser
from gamification.leaderboards.standings import Standing, compute_standings
from gamification.leaderboards.store import apply_updates
from tests.support import ShiftableClock
from tests.support.events import join
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.leaderboards import feed
from tests.support.locks import sqlite_write_lock_free


def _on_sqlite(services: Services) -> None:
    if services.db.dialect != "sqlite":
        pytest.skip("SQLite's database-wide write lock; PostgreSQL locks rows")


async def test_a_read_transaction_leaves_the_write_lock_free(services: Services) -> None:
    _on_sqlite(services)
    # given a read transaction that has read
    async with services.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Program)) is not None
        # then another connection (another server process) can write meanwhile
        assert sqlite_write_lock_free(services.settings.require_database_url())


async def test_a_read_opened_inside_a_unit_of_work_does_not_wait_for_it(services: Services) -> None:
    # given a unit of work holding its transaction (on SQLite: the write lock)
    async with services.db.unit_of_work() as uow:
        await uow.session.execute(select(func.count()).select_from(Program))
        # when the same process reads in a second transaction meanwhile
        async with asyncio.timeout(10), services.db.read() as session:
            count = await session.scalar(select(func.count()).select_from(Program))
    # then the read completes at once instead of waiting out the busy timeout for its own writer
    assert count is not None


async def test_the_period_closer_ranks_without_holding_the_write_lock(
    services: Services, program: ProgramFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_sqlite(services)
    # given a new program: its points board's periods that ended were never frozen
    url = services.settings.require_database_url()
    free_while_ranking: list[bool] = []
    rank = compute_standings

    async def probed(*args: Any, **kwargs: Any) -> list[Standing]:
        free_while_ranking.append(sqlite_write_lock_free(url))
        return await rank(*args, **kwargs)

    monkeypatch.setattr(snapshots, "compute_standings", probed)
    closer = next(loop for loop in services.loops if isinstance(loop, PeriodCloser))

    # when the closer passes (as a server's first pass does, for this program only: the run's
    # database holds every earlier test's programs)
    await closer.close_ended(services.clock.now(), program_ids=[program.id])

    # then it ranked the program's closed periods while other connections could write
    assert free_while_ranking
    assert all(free_while_ranking)
    async with services.db.read() as session:
        closed = await session.scalar(
            select(func.count())
            .select_from(LeaderboardSnapshot)
            .where(LeaderboardSnapshot.program_id == program.id, LeaderboardSnapshot.scope == "*")
        )
    assert closed == len(POINTS_BOARD.periods) - 1  # every period but ALL_TIME, which never closes


async def test_the_feeder_writes_redis_without_holding_the_write_lock(
    services: Services,
    program: ProgramFixture,
    integration: GraphQLClient,
    clock: ShiftableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _on_sqlite(services)
    # given a member whose standings moved (a row in the standings feed)
    await join(integration, "ana")
    async with services.db.unit_of_work() as uow:
        member_id = await uow.session.scalar(
            select(Member.id).where(Member.program_id == program.id, Member.external_id == "ana")
        )
        assert member_id is not None
        await mark_standings(uow.session, program.id, [(member_id, clock.now())])
    url = services.settings.require_database_url()
    free_while_writing: list[bool] = []

    async def probed(*args: Any, **kwargs: Any) -> bool:
        free_while_writing.append(sqlite_write_lock_free(url))
        return await apply_updates(*args, **kwargs)

    monkeypatch.setattr(feeder, "apply_updates", probed)

    # when the feeder drains the feed
    await feed(services)

    # then it wrote Redis while other connections could write, and the row is gone
    assert free_while_writing
    assert all(free_while_writing)
    async with services.db.read() as session:
        left = await session.scalar(
            select(func.count()).select_from(StandingsFeed).where(StandingsFeed.program_id == program.id)
        )
    assert left == 0


async def test_the_relay_publishes_without_holding_the_write_lock(
    services: Services, clock: ShiftableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_sqlite(services)
    # given a relay holding the lease, which publishes at least a heartbeat every pass
    relay = ChangeRelay(services.db, services.redis, clock)
    await relay.lease.take_over()
    url = services.settings.require_database_url()
    free_while_publishing: list[bool] = []
    publish = services.redis.publish

    async def probed(channel: str, message: str | bytes) -> int:
        free_while_publishing.append(sqlite_write_lock_free(url))
        return await publish(channel, message)

    monkeypatch.setattr(services.redis, "publish", probed)
    try:
        # when it passes
        await relay.run_once()
    finally:
        await relay.lease.release()

    # then it published while other connections could write
    assert free_while_publishing
    assert all(free_while_publishing)


async def test_a_compliance_sweep_with_nothing_to_change_writes_nothing(
    services: Services, program: ProgramFixture, clock: ShiftableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a program without blocked accruals (nobody to tag or untag), and units of work counted
    opened: list[UnitOfWork] = []
    unit_of_work = services.db.unit_of_work

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[UnitOfWork]:
        async with unit_of_work() as uow:
            opened.append(uow)
            yield uow

    monkeypatch.setattr(services.db, "unit_of_work", counted)

    # when the sweeper settles it (a server's first pass does so for every program)
    settled = await ComplianceSweeper(services.db, clock, services.compliance).sweep(program.id, clock.now())

    # then it only read: no write transaction (on SQLite, no turn at the write lock)
    assert settled == ([], [])
    assert opened == []
