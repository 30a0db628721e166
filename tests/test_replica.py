"""The read replica (LOYALTY_DATABASE_REPLICA_URL) through the GraphQL endpoint, on a primary and a
streaming replica of the test's own (tests/support/pg_replica.py).

Which server answered a read is proved by lag, made on purpose: the replica's WAL replay is paused,
a write goes to the primary, and a read that shows the data from before the write came from the
replica, one that shows the write came from the primary.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from api.app import create_app
from api.runtime import Services, build_services
from domain.db.engine import Database, create_engine, session_factory
from domain.db.replica import Replica
from domain.settings import ConfigurationError, Settings
from gamification.leaderboards.snapshots import PeriodCloser
from tests.support import FrozenClock, ShiftableClock, move_to
from tests.support.events import RECORD, UPSERT
from tests.support.graphql import GraphQLClient, admin_token, http_client, new_program
from tests.support.leaderboards import feed, ranking
from tests.support.pg_replica import PgPair
from tests.support.segments import create
from tests.support.webhooks import HostsResolver

LISTING = "{ members(first: 500) { totalCount } }"
ONE = "query($id: String!) { member(externalId: $id) { externalId } }"
ANALYTICS = "query($k: String!, $d: Date!) { segmentAnalytics(key: $k, from: $d, to: $d) { size } }"
FROZEN = """query($s: DateTime) { leaderboard(key: "weekly", period: WEEKLY, periodStart: $s, frozen: true) {
              size top { rank score member { externalId } } } }"""
NOW = datetime(2027, 3, 10, 12, tzinfo=UTC)
WEEK = datetime(2027, 3, 8, tzinfo=UTC)
#: The logger of domain/db/replica.py: the outage and recovery lines the tests count.
REPLICA_LOG = "domain.db.replica"


@pytest.fixture(scope="module")
def replica_clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture(scope="module")
async def replicated(
    pg_pair: PgPair, settings: Settings, replica_clock: ShiftableClock, hosts: HostsResolver
) -> AsyncIterator[Services]:
    """The services on the pair: the primary for writes, the replica for the reads that may lag."""
    on_pair = replace(
        settings,
        database_url=pg_pair.primary_url,
        database_replica_url=pg_pair.replica_url,
        # an hour: however slowly the machine restarts the replica, only the test's clock makes the
        # recheck due
        replica_recheck_s=3600,
        redis_prefix=f"{settings.redis_prefix}replica:",
    )
    built = build_services(on_pair, clock=replica_clock, resolver=hosts)
    yield built
    keys = [k async for k in built.redis.client.scan_iter(match=f"{on_pair.redis_prefix}*")]
    if keys:
        await built.redis.client.delete(*keys)
    await built.close()


@pytest.fixture
def lag(pg_pair: PgPair) -> Iterator[PgPair]:
    """The pair, commits not waiting for the replica; the replica running and replaying afterwards
    whatever the test left it doing."""
    with pg_pair.asynchronous():
        try:
            yield pg_pair
        finally:
            if not pg_pair.replica_running:
                pg_pair.start_replica()
                pg_pair.wait_streaming()
            pg_pair.resume_replay()


@pytest.fixture
async def api(
    replicated: Services, replica_clock: ShiftableClock
) -> AsyncIterator[tuple[GraphQLClient, GraphQLClient]]:
    """A fresh program's admin and integration, on the replicated services, the clock at NOW."""
    move_to(replica_clock, NOW)
    program = await new_program(replicated)
    async with http_client(create_app(replicated), "10.200.0.1") as http:
        admin = GraphQLClient(http, await admin_token(http, program, replica_clock))
        yield admin, GraphQLClient(http, program.api_key)


def replica_of(services: Services) -> Replica:
    assert services.db.replica is not None
    return services.db.replica


async def total(client: GraphQLClient) -> int:
    count: int = (await client.data(LISTING))["members"]["totalCount"]
    return count


@pytest.mark.slow  # the pair: two PostgreSQL clusters
async def test_analytics_and_listings_come_from_the_replica_and_reads_of_a_write_from_the_primary(
    api: tuple[GraphQLClient, GraphQLClient], lag: PgPair
) -> None:
    admin, integration = api
    # given a segment of everyone and one member in it, on both servers
    await create(admin, "everyone", "pointsBalance >= 0")
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    today = {"k": "everyone", "d": NOW.date().isoformat()}
    lag.wait_replayed()
    assert (await admin.data(ANALYTICS, today))["segmentAnalytics"]["size"] == 1
    # when the replica stops applying the primary's changes and a second member is written
    lag.pause_replay()
    await integration.data(UPSERT, {"m": [{"externalId": "bob"}]})
    # then the write's own member is read back at once (the primary) ...
    assert (await integration.data(ONE, {"id": "bob"}))["member"] == {"externalId": "bob"}
    # ... while the listing and the segment's analytics show the replica's state, before the write
    assert await total(integration) == 1
    assert (await admin.data(ANALYTICS, today))["segmentAnalytics"]["size"] == 1
    # and once the replica has caught up they show it too
    lag.resume_replay()
    assert await total(integration) == 2
    assert (await admin.data(ANALYTICS, today))["segmentAnalytics"]["size"] == 2


@pytest.mark.slow
async def test_a_snapshot_is_read_on_the_replica_once_it_holds_it_and_on_the_primary_before(
    api: tuple[GraphQLClient, GraphQLClient], lag: PgPair, replicated: Services, replica_clock: ShiftableClock
) -> None:
    admin, integration = api
    # given a weekly board keeping two ranks at the close, and three members' purchases this week
    await admin.data(
        """mutation { setLeaderboard(input: {key: "weekly", name: "Weekly", periods: [WEEKLY],
             keepPeriods: 1, snapshotSize: 2}) { key } }"""
    )
    await integration.data(UPSERT, {"m": [{"externalId": m} for m in ("ana", "bob", "cem")]})
    await integration.data(
        RECORD,
        {
            "e": [
                purchase(f"e-{m}", m, NOW - timedelta(hours=1), amount)
                for m, amount in [("ana", "10"), ("bob", "30"), ("cem", "20")]
            ]
        },
    )
    await feed(replicated)
    lag.wait_replayed()
    # when the week closes while the replica applies nothing
    lag.pause_replay()
    move_to(replica_clock, datetime(2027, 3, 15, 0, 1, tzinfo=UTC))
    await next(loop for loop in replicated.loops if isinstance(loop, PeriodCloser)).run_once()
    # then the frozen week is read all the same: from the primary, the only one holding it
    expected = [(1, "bob", 30), (2, "cem", 20)]
    assert frozen_ranking(await integration.data(FROZEN, {"s": WEEK.isoformat()})) == (3, expected)
    # and once the replica holds the snapshot it serves it: a change made on the primary alone
    # while replay is paused again does not show
    lag.resume_replay()
    lag.pause_replay()
    lag.sql(lag.primary_port, "UPDATE leaderboard_snapshot_entries SET score = score + 1000")
    assert frozen_ranking(await integration.data(FROZEN, {"s": WEEK.isoformat()})) == (3, expected)
    lag.resume_replay()
    bumped = [(rank, member, score + 1000) for rank, member, score in expected]
    assert frozen_ranking(await integration.data(FROZEN, {"s": WEEK.isoformat()})) == (3, bumped)


@pytest.mark.slow
async def test_with_the_replica_down_reads_fall_back_to_the_primary_and_return_once_it_is_back(
    api: tuple[GraphQLClient, GraphQLClient],
    lag: PgPair,
    replicated: Services,
    replica_clock: ShiftableClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, integration = api
    replica = replica_of(replicated)
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    lag.wait_replayed()
    assert await total(integration) == 1
    # when the replica stops
    lag.stop_replica()
    with caplog.at_level(logging.INFO, logger="domain.db.replica"):
        await integration.data(UPSERT, {"m": [{"externalId": "bob"}]})
        # then the reads that may lag succeed, on the primary (they see the write at once)
        assert await total(integration) == 2
        assert await total(integration) == 2
        # and the outage is logged once, not once per read
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == REPLICA_LOG]
        assert len(warnings) == 1
        assert "read replica unreachable" in warnings[0].getMessage()
        assert replica.down_since is not None
        # when it is back: the reads stay on the primary until the recheck is due ...
        lag.start_replica()
        lag.wait_streaming()
        lag.pause_replay()
        await integration.data(UPSERT, {"m": [{"externalId": "cem"}]})
        assert await total(integration) == 3
        # ... and then return to the replica (paused: it does not have the third member yet)
        replica_clock.shift(replica.recheck)
        assert await total(integration) == 2
        assert replica.down_since is None
        recovered = [
            r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name == REPLICA_LOG
        ]
        assert len(recovered) == 1
        assert recovered[0].startswith("read replica answers again after")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING and r.name == REPLICA_LOG]) == 1


@pytest.mark.slow
async def test_a_lagging_read_runs_on_the_standby_and_on_the_primary_when_a_replica_never_answers(
    pg_pair: PgPair,
) -> None:
    clock = FrozenClock()
    # given a replica that answers: the session of a lagging read is the standby's
    answering = database(pg_pair.primary_url, pg_pair.replica_url, clock)
    try:
        async with answering.lagging_read() as session:
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is True
        async with answering.read() as session:
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is False
    finally:
        await answering.dispose()
    # given one that accepts the connection and never says a word (a hung host)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        hung = f"postgresql+asyncpg://postgres@127.0.0.1:{silent.getsockname()[1]}/loyalty"
        silent_db = database(pg_pair.primary_url, hung, clock)
        try:
            # when a lagging read starts, it runs on the primary once the connect timeout (1 s) passes
            started = time.monotonic()
            async with silent_db.lagging_read() as session:
                assert await session.scalar(text("SELECT pg_is_in_recovery()")) is False
            assert 1 <= time.monotonic() - started < 10
            # and until the recheck is due the replica is not tried again: no second wait
            started = time.monotonic()
            async with silent_db.lagging_read() as session:
                assert await session.scalar(text("SELECT 1")) == 1
            assert time.monotonic() - started < 1
        finally:
            await silent_db.dispose()


def database(primary_url: str, replica_url: str, clock: FrozenClock) -> Database:
    engine = create_engine(replica_url, pool_size=1, connect_timeout_s=1)
    replica = Replica(engine, session_factory(engine), clock, timedelta(seconds=10))
    return Database(create_engine(primary_url, pool_size=1), replica=replica)


def test_the_replica_url_names_a_postgresql_replica_of_a_postgresql_primary() -> None:
    primary, standby = "postgresql+asyncpg://db1/loyalty", "postgresql+asyncpg://db2/loyalty"
    both = {"LOYALTY_DATABASE_URL": primary, "LOYALTY_DATABASE_REPLICA_URL": standby}
    assert Settings.from_env(both).database_replica_url == standby
    assert Settings.from_env({"LOYALTY_DATABASE_URL": primary}).database_replica_url is None
    with pytest.raises(
        ConfigurationError, match=r"^LOYALTY_DATABASE_REPLICA_URL must be a postgresql\+asyncpg://"
    ):
        Settings.from_env({**both, "LOYALTY_DATABASE_REPLICA_URL": "mysql://db2/loyalty"})
    with pytest.raises(ConfigurationError, match=r"^LOYALTY_DATABASE_REPLICA_URL needs a PostgreSQL primary"):
        Settings.from_env({**both, "LOYALTY_DATABASE_URL": "sqlite+aiosqlite:///var/loyalty.db"})
    with pytest.raises(ConfigurationError, match=r"^LOYALTY_REPLICA_RECHECK must be a positive integer"):
        Settings.from_env({**both, "LOYALTY_REPLICA_RECHECK": "0"})


def purchase(key: str, member: str, at: datetime, amount: str) -> dict[str, Any]:
    return {
        "externalId": key,
        "memberExternalId": member,
        "type": "purchase",
        "occurredAt": at.isoformat(),
        "amount": amount,
    }


def frozen_ranking(data: dict[str, Any]) -> tuple[int, list[tuple[int, str, int]]]:
    board = data["leaderboard"]
    return board["size"], ranking(board["top"])
