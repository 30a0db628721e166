"""Stale table statistics: /readyz and the server's start name the risk (PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text

from api.runtime import Services
from domain.ops.statistics import STALE_ROWS, TableStatistics, statistics_warnings
from domain.settings import Settings
from tests.support.graphql import ProgramFixture
from tests.support.servers import running_server


def table(
    name: str = "events", *, off: bool = False, analysed: bool = True, mods: int = 0, rows: int = 0
) -> TableStatistics:
    return TableStatistics(name, off, analysed, mods, rows)


def test_the_warnings_name_the_risk_and_what_to_do() -> None:
    assert statistics_warnings(True, [table(), table("members", analysed=False, mods=STALE_ROWS)]) == []
    [off] = statistics_warnings(False, [table()])
    assert off.startswith("autovacuum is off:")
    assert "docs/operations.md" in off
    [disabled] = statistics_warnings(True, [table("events", off=True), table("members")])
    assert disabled.startswith("autovacuum is disabled on events:")
    stale = statistics_warnings(
        True,
        [
            table("events", mods=STALE_ROWS + 2001, rows=10_000),
            table("members", mods=STALE_ROWS + 1999, rows=10_000),
        ],
    )
    assert stale == [
        f"statistics of events are stale: {STALE_ROWS + 2001} rows changed since its last analyse; "
        'run ANALYZE events (see docs/operations.md, "Table statistics")'
    ]
    [never] = statistics_warnings(True, [table("outbox", analysed=False, mods=STALE_ROWS + 1)])
    assert "and it was never analysed" in never


async def warnings(client: httpx.AsyncClient) -> list[str]:
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    found: list[str] = ready.json()["warnings"]
    return found


@pytest.fixture
def postgres(services: Services) -> None:
    if services.db.dialect != "postgresql":
        pytest.skip("table statistics are PostgreSQL's (SQLite: nothing to warn about)")


async def test_readyz_names_autovacuum_off_and_tables_without_it(
    services: Services, client: httpx.AsyncClient, postgres: None
) -> None:
    async with services.db.engine.connect() as connection:
        server_autovacuum = (await connection.execute(text("SHOW autovacuum"))).scalar_one()
    listed = await warnings(client)
    assert any(w.startswith("autovacuum is off:") for w in listed) == (server_autovacuum == "off")
    async with services.db.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE member_tags SET (autovacuum_enabled = false)"))
    try:
        assert any(w.startswith("autovacuum is disabled on member_tags:") for w in await warnings(client))
    finally:
        async with services.db.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE member_tags RESET (autovacuum_enabled)"))
    assert not any("member_tags" in w for w in await warnings(client))


async def test_readyz_names_a_table_changed_since_its_last_analyse(
    services: Services, program: ProgramFixture, client: httpx.AsyncClient, postgres: None
) -> None:
    async with services.db.engine.begin() as connection:
        await connection.execute(text("ANALYZE standings_feed"))
    assert not any("standings_feed" in w for w in await warnings(client))
    async with services.db.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO standings_feed (program_id, member_id, at)"
                " SELECT :p, 0, now() FROM generate_series(1, :n)"
            ),
            {"p": program.id, "n": STALE_ROWS * 3},
        )
        await connection.execute(text("SELECT pg_stat_force_next_flush()"))
    try:
        for _ in range(50):  # the statistics collector reports the inserts once the session is idle
            if any(w.startswith("statistics of standings_feed are stale") for w in await warnings(client)):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no warning about standings_feed: {await warnings(client)}")
    finally:
        async with services.db.engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM standings_feed WHERE program_id = :p"), {"p": program.id}
            )
            await connection.execute(text("ANALYZE standings_feed"))


async def test_readyz_has_no_warnings_on_sqlite(services: Services, client: httpx.AsyncClient) -> None:
    if services.db.dialect != "sqlite":
        pytest.skip("PostgreSQL is covered above")
    assert await warnings(client) == []


@pytest.mark.slow
async def test_the_server_warns_at_start(
    settings: Settings, services: Services, tmp_path: Path, postgres: None
) -> None:
    stderr = tmp_path / "server.log"
    async with running_server(settings, {"LOYALTY_LOG_FORMAT": "json"}, stderr_to=stderr):
        pass
    async with services.db.engine.connect() as connection:
        server_autovacuum = (await connection.execute(text("SHOW autovacuum"))).scalar_one()
    lines = [orjson.loads(line) for line in stderr.read_bytes().splitlines() if line.strip()]
    started = [
        line["message"] for line in lines if line["logger"] == "api.runtime" and line["level"] == "WARNING"
    ]
    assert any("table statistics: autovacuum is off:" in m for m in started) == (server_autovacuum == "off")
