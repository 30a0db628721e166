"""A scratch database per test, on SQLite and on PostgreSQL, for migrations run on data
(tests/test_migrations_roles.py, tests/test_migrations_referrals.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.backends import PG_HOST, PG_PORT, RUN_ID, create_pg_database, drop_pg_database, reachable


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
        return
    if not reachable(PG_HOST, PG_PORT):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"loyalty_migrated_{RUN_ID}"
    asyncio.run(create_pg_database(name))
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(drop_pg_database(name))


def run_sql(url: str, statements: list[str], query: str | None = None) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
                return [] if query is None else list((await connection.execute(text(query))).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())
