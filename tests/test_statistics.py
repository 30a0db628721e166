"""Stale table statistics: /readyz and the server's start name the risk (PostgreSQL), /readyz without
table names or figures and at most one check a minute."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text

from api.runtime import Services
from domain.ops.statistics import (
    CHECK_EVERY,
    DISABLED,
    HOT_TABLES,
    STALE,
    STALE_ROWS,
    TableStatistics,
    autovacuum_off,
    statistics_risks,
)
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.graphql import ProgramFixture
from tests.support.outage import until
from tests.support.servers import running_server


def table(
    name: str = "events", *, off: bool = False, analysed: bool = True, mods: int = 0, rows: int = 0
) -> TableStatistics:
    return TableStatistics(name, off, analysed, mods, rows)


def test_a_stale_or_unvacuumed_table_is_a_risk_and_autovacuum_off_alone_is_not() -> None:
    fine = [table(), table("members", analysed=False, mods=STALE_ROWS)]
    assert statistics_risks(True, fine) == []
    assert statistics_risks(False, fine) == []  # autovacuum off with a scheduled ANALYZE: no alert

    [disabled] = statistics_risks(True, [table("events", off=True), table("members")])
    assert disabled.public == DISABLED
    assert disabled.detail.startswith("autovacuum is disabled on events:")

    stale = statistics_risks(
        True,
        [
            table("events", mods=STALE_ROWS + 2001, rows=10_000),
            table("members", mods=STALE_ROWS + 1999, rows=10_000),
        ],
    )
    assert [(r.public, r.detail) for r in stale] == [
        (
            STALE,
            f"statistics of events are stale: {STALE_ROWS + 2001} rows changed since its last analyse; "
            'run ANALYZE events (see docs/operations.md, "Table statistics")',
        )
    ]
    [never] = statistics_risks(False, [table("outbox", analysed=False, mods=STALE_ROWS + 1)])
    assert never.public == STALE
    assert "and it was never analysed" in never.detail
    assert "autovacuum is off: turn it on or ANALYZE the hot tables on a schedule" in never.detail


def test_autovacuum_enabled_is_read_in_every_spelling_postgresql_keeps() -> None:
    for off in ("false", "off", "0", "no", "OFF", "False", "Fa", "n", "of"):
        assert autovacuum_off(off), off
    for on in (None, "true", "on", "1", "yes", "TRUE", "t", "y"):
        assert not autovacuum_off(on), on


@pytest.fixture
def postgres(services: Services) -> None:
    if services.db.dialect != "postgresql":
        pytest.skip("table statistics are PostgreSQL's (SQLite: nothing to warn about)")


@pytest.fixture
async def analysed(services: Services, postgres: None) -> AsyncIterator[None]:
    """Every hot table analysed just now, so that none is stale, and the check's cache refreshed."""
    async with services.db.engine.begin() as connection:
        await connection.execute(text(f"ANALYZE {', '.join(HOT_TABLES)}"))
    await services.statistics.refresh()
    yield
    await services.statistics.refresh()


async def ready(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    return response


async def warnings(client: httpx.AsyncClient) -> list[str]:
    found: list[str] = (await ready(client)).json()["warnings"]
    return found


async def set_autovacuum(services: Services, table_name: str, value: str | None) -> None:
    option = "RESET (autovacuum_enabled)" if value is None else f"SET (autovacuum_enabled = {value})"
    async with services.db.engine.begin() as connection:
        await connection.execute(text(f"ALTER TABLE {table_name} {option}"))


async def test_readyz_names_a_table_without_autovacuum_as_a_risk_checked_at_most_once_a_minute(
    services: Services, client: httpx.AsyncClient, clock: ShiftableClock, analysed: None
) -> None:
    # given a check made now, with nothing to warn about
    assert await warnings(client) == []

    # when autovacuum is disabled on a hot table, spelt "off"
    await set_autovacuum(services, "member_tags", "off")
    try:
        # then /readyz says so once its last check is a minute old, naming the risk but not the table
        assert await warnings(client) == []
        clock.shift(CHECK_EVERY)
        response = await ready(client)
        assert response.json()["warnings"] == [DISABLED]
        assert "member_tags" not in response.text
    finally:
        await set_autovacuum(services, "member_tags", None)
    clock.shift(CHECK_EVERY)
    assert await warnings(client) == []


async def test_readyz_names_stale_statistics_and_the_log_says_which_table_and_why(
    services: Services,
    program: ProgramFixture,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    analysed: None,
) -> None:
    # given a server whose autovacuum may be on or off (this machine's is off)
    async with services.db.engine.connect() as connection:
        server_autovacuum = (await connection.execute(text("SHOW autovacuum"))).scalar_one()

    # when a hot table changes a lot after its last analyse
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
        # then a check finds it stale (the statistics collector reports the inserts once the session
        # is idle), /readyz names the risk without the table or the figures, and the log has both
        with caplog.at_level(logging.WARNING, logger="domain.ops.statistics"):

            async def stale() -> bool:
                return await services.statistics.refresh() == [STALE]

            await until(stale, "a check finds standings_feed stale")
        response = await ready(client)
        assert response.json()["warnings"] == [STALE]
        assert "standings_feed" not in response.text
        [detail] = [r.getMessage() for r in caplog.records if "standings_feed" in r.getMessage()]
        # (at least the rows inserted here: the suite's other work may have touched the table too)
        changed = re.match(
            r"table statistics: statistics of standings_feed are stale: (\d+) rows changed", detail
        )
        assert changed is not None, detail
        assert int(changed.group(1)) >= STALE_ROWS * 3
        assert ("autovacuum is off" in detail) == (server_autovacuum == "off")
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
    # given a hot table whose autovacuum is disabled, spelt "0"
    await set_autovacuum(services, "member_tags", "0")
    stderr = tmp_path / "server.log"
    try:
        # when a server starts
        async with (
            running_server(settings, {"LOYALTY_LOG_FORMAT": "json"}, stderr_to=stderr) as server,
            httpx.AsyncClient(base_url=server.http) as http,
        ):
            readyz = await http.get("/readyz")
    finally:
        await set_autovacuum(services, "member_tags", None)

    # then it logs a warning naming the table, and its /readyz names the risk only
    lines = [orjson.loads(line) for line in stderr.read_bytes().splitlines() if line.strip()]
    started = [
        line["message"]
        for line in lines
        if line["logger"] == "domain.ops.statistics" and line["level"] == "WARNING"
    ]
    assert any(m.startswith("table statistics: autovacuum is disabled on member_tags:") for m in started)
    assert DISABLED in readyz.json()["warnings"]
    assert "member_tags" not in readyz.text
