"""SQLite has one write lock per database: reads and background passes must not hold it while they
compute or wait on Redis, or every writer (another server process, a request) queues behind them
and fails after the 30 s busy timeout ("database is locked", a 503)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from api.runtime import Services
from domain.models import Program
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
