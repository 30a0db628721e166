"""Partitioned history (PostgreSQL): events land in their month's partition, an externalId stays unique
across months, and `loyalty prune --events-retention` refuses a retention shorter than a stored window,
drops whole old months otherwise, and leaves balances and all-history metrics exact.

It runs on a database of its own: a prune drops every program's old months.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from api.app import create_app
from api.retention_windows import stored_windows
from api.runtime import Services, build_services
from domain.db.partitions import EVENTS, ensure_months, month_start, partition_name, partitions_of
from domain.models import LedgerEntry
from domain.ops.event_retention import EventPartitionPruner, PostgresqlOnly, RetentionRefused
from domain.ops.partition_upkeep import PartitionUpkeep
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.backends import Backends, fresh_database
from tests.support.cli import cli_environment, loyalty, ok
from tests.support.fraud import reviewer
from tests.support.graphql import GraphQLClient, admin_token, new_program

RECORD = "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { externalId status message } } }"
CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"
MEMBER = '{ member(externalId: "m1") { pointsBalance segments { key } } }'


@dataclass
class Fresh:
    services: Services
    http: httpx.AsyncClient


@pytest.fixture(scope="module")
def partitions_database(backends: Backends) -> Iterator[str]:
    with fresh_database(backends, "partitions") as url:
        yield url


@pytest.fixture
async def fresh(settings: Settings, partitions_database: str, clock: ShiftableClock) -> AsyncIterator[Fresh]:
    services = build_services(replace(settings, database_url=partitions_database), clock=clock)
    transport = httpx.ASGITransport(app=create_app(services), client=("10.250.0.2", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield Fresh(services, http)
    await services.close()


def purchase(external_id: str, at: object, amount: str = "10") -> dict[str, object]:
    return {
        "externalId": external_id,
        "memberExternalId": "m1",
        "type": "purchase",
        "occurredAt": at.isoformat() if hasattr(at, "isoformat") else at,
        "amount": amount,
        "properties": {},
    }


async def record(pos: GraphQLClient, *events: dict[str, object]) -> dict[str, str]:
    results = (await pos.data(RECORD, {"e": list(events)}))["recordEvents"]["results"]
    return {r["externalId"]: r["status"] for r in results}


async def partitions(services: Services, program_id: int) -> dict[str, str]:
    """Each event's partition, by externalId."""
    async with services.db.read() as session:
        rows = await session.execute(
            text("SELECT external_id, tableoid::regclass::text FROM events WHERE program_id = :p"),
            {"p": program_id},
        )
        return {external_id: partition for external_id, partition in rows}  # noqa: C416 - rows are Row objects


def postgresql_only(services: Services) -> None:
    if services.db.dialect != "postgresql":
        pytest.skip("SQLite keeps plain tables")


async def test_events_land_in_their_month_and_a_month_created_later_takes_its_rows_out_of_default(
    fresh: Fresh, clock: ShiftableClock
) -> None:
    services = fresh.services
    postgresql_only(services)
    program = await new_program(services, auto_create=True)
    pos = GraphQLClient(fresh.http, program.api_key)
    now = clock.now()

    # given an event now and a backdated one, 500 days ago (older than the first month created)
    assert await record(pos, purchase("today", now), purchase("backdated", now - timedelta(days=500))) == {
        "today": "ACCEPTED",
        "backdated": "ACCEPTED",
    }
    # and, five months on, an event of a month not created yet
    clock.shift(timedelta(days=150))
    later = clock.now()
    assert await record(pos, purchase("later", later)) == {"later": "ACCEPTED"}
    assert await partitions(services, program.id) == {
        "today": partition_name(EVENTS, month_start(now)),
        "backdated": "events_default",
        "later": "events_default",
    }

    # when the upkeep loop runs, and an old month is created on demand
    await PartitionUpkeep(services.db, clock).run_once()
    async with services.db.unit_of_work() as uow:
        await ensure_months(uow.session, now - timedelta(days=500), ahead=0)

    # then each event is in its month's partition
    assert await partitions(services, program.id) == {
        "today": partition_name(EVENTS, month_start(now)),
        "backdated": partition_name(EVENTS, month_start(now - timedelta(days=500))),
        "later": partition_name(EVENTS, month_start(later)),
    }


async def test_prune_refuses_a_retention_within_a_window_then_drops_old_months_and_keeps_aggregates_exact(
    fresh: Fresh, clock: ShiftableClock
) -> None:
    services = fresh.services
    postgresql_only(services)
    program = await new_program(services, auto_create=True)
    admin = GraphQLClient(fresh.http, await admin_token(fresh.http, program, clock))
    pos = GraphQLClient(fresh.http, program.api_key)
    now = clock.now()
    old = now - timedelta(days=600)
    async with services.db.unit_of_work() as uow:  # the old month's partition, created on demand
        await ensure_months(uow.session, old, ahead=0)

    # given three purchases of m1 (600 days ago, and two now), segments over all history and 200 days
    assert await record(pos, purchase("p-old", old), purchase("p1", now), purchase("p2", now)) == {
        "p-old": "ACCEPTED",
        "p1": "ACCEPTED",
        "p2": "ACCEPTED",
    }
    for key, rule in (("buyers", "count(purchase) >= 3"), ("recent", "count(purchase, 200d) >= 1")):
        await admin.data(CREATE, {"i": {"key": key, "name": key, "kind": "DYNAMIC", "rule": rule}})
    before = (await admin.data(MEMBER))["member"]
    assert before["pointsBalance"] == 30
    assert {"buyers", "recent"} <= {s["key"] for s in before["segments"]}
    pruner = EventPartitionPruner(services.db, clock)
    windows = await stored_windows(services.db, services.segments.engine)

    # when an old purchase is held for review: refused until it is decided
    assert await record(pos, purchase("p-held", old, amount="6000")) == {"p-held": "HELD_FOR_REVIEW"}
    with pytest.raises(RetentionRefused) as held:
        await pruner.run(400, windows, dry_run=True)
    assert str(held.value).startswith("1 events held for review occurred before ")
    async with services.db.read() as session:
        entry_id = await session.scalar(
            select(LedgerEntry.id).where(
                LedgerEntry.program_id == program.id, LedgerEntry.status == "PENDING_REVIEW"
            )
        )
    assert entry_id is not None
    await services.review.reject(reviewer(program.id, clock), entry_id, "not a real purchase")

    # when the retention does not exceed the 200-day segment, or the fraud rules' 90 days: refused
    with pytest.raises(RetentionRefused) as refused:
        await pruner.run(200, windows, dry_run=False)
    assert str(refused.value) == (
        f"--events-retention 200 days does not exceed the longest window: segment 'recent' of program "
        f"{program.key!r} reads raw events over 200 days"
    )
    old_month = partition_name(EVENTS, month_start(old))
    assert old_month in (await partitions(services, program.id)).values()

    # when it does: a dry run counts the old months (this program's, and the earlier test's), the run
    # drops exactly those
    dry = await pruner.run(400, windows, dry_run=True)
    assert {"partition": old_month, "rows": 2} in [d.as_json() for d in dry.dropped]  # p-old, p-held
    done = await pruner.run(400, windows, dry_run=False)
    assert done == dry
    async with services.db.read() as session:
        assert not set(await partitions_of(session, EVENTS)) & {d.partition for d in done.dropped}

    # then the old event is gone, balance and all-history segments are the same after a recompute
    assert sorted(await partitions(services, program.id)) == ["p1", "p2"]  # p-held went with its month
    await admin.data("mutation { recomputeSegments }")
    after = (await admin.data(MEMBER))["member"]
    assert after["pointsBalance"] == 30
    assert {s["key"] for s in after["segments"]} == {s["key"] for s in before["segments"]}
    # and its externalId is still taken, in any month: the claim outlives the partition
    results = await pos.data(RECORD, {"e": [purchase("p-old", now), purchase("p-old", old)]})
    assert [r["status"] for r in results["recordEvents"]["results"]] == ["DUPLICATE", "DUPLICATE"]
    assert (await admin.data(MEMBER))["member"]["pointsBalance"] == 30


async def test_a_fraud_rules_window_is_named_when_it_is_the_longest(
    fresh: Fresh, clock: ShiftableClock
) -> None:
    services = fresh.services
    postgresql_only(services)
    program = await new_program(services)
    windows = [
        w for w in await stored_windows(services.db, services.segments.engine) if program.key in w.source
    ]
    longest = max(windows, key=lambda w: float("inf") if w.days is None else w.days)
    assert longest.describe() == (
        f"fraud rule 'amount_outlier' (days) of program {program.key!r} reads raw events over 90 days"
    )
    with pytest.raises(RetentionRefused):
        await EventPartitionPruner(services.db, clock).run(90, windows, dry_run=True)


async def test_sqlite_says_event_prune_is_postgresql_only(fresh: Fresh, clock: ShiftableClock) -> None:
    services = fresh.services
    if services.db.dialect != "sqlite":
        pytest.skip("PostgreSQL prunes event partitions")
    with pytest.raises(PostgresqlOnly) as refused:
        await EventPartitionPruner(services.db, clock).run(400, [], dry_run=False)
    assert refused.value.code == "POSTGRESQL_ONLY"


def test_the_command_says_on_sqlite_that_event_prune_is_postgresql_only(tmp_path: Path) -> None:
    # given a migrated SQLite database
    env = cli_environment(tmp_path)
    ok(env, "db", "upgrade")

    # when `loyalty prune --events-retention` runs on it
    result = loyalty(env, "prune", "--events-retention", "400")

    # then it fails with one line naming the code, and deletes nothing
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "loyalty: POSTGRESQL_ONLY: --events-retention drops event partitions, which only PostgreSQL has; "
        "on SQLite events are kept (docs/operations.md, Raw-event retention)"
    )
    assert result.stdout == ""
