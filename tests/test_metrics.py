"""GET /metrics: refused without its token; counters move by exactly the work done; backlogs read at scrape."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert, select, update
from sqlalchemy.pool import QueuePool

from api import serving
from api.app import create_app
from api.runtime import Services
from domain.db.engine import create_engine
from domain.live.relay import ChangeRelay
from domain.models import Member, OutboxItem, Segment, SegmentChange, StandingsFeed
from domain.ops import metrics
from domain.segments.membership import Flip
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.outage import until
from tests.support.servers import running_server

TOKEN = "metrics-token-" + "t" * 24
CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"
INGEST = """
mutation Ingest($e: [EventInput!]!) { recordEvents(events: $e) { results { externalId status } } }"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def scraper(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose /metrics is on (LOYALTY_METRICS_TOKEN set), on the test services."""
    app = create_app(replace(services, settings=replace(services.settings, metrics_token=TOKEN)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield http


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def event(external_id: str, member: str, kind: str = "visit") -> dict[str, Any]:
    return {
        "externalId": external_id,
        "memberExternalId": member,
        "type": kind,
        "occurredAt": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
    }


async def test_metrics_are_not_served_without_the_token(
    client: httpx.AsyncClient, scraper: httpx.AsyncClient
) -> None:
    off = await client.get("/metrics")  # the suite's app: LOYALTY_METRICS_TOKEN unset
    assert off.status_code == 404
    assert off.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert "LOYALTY_METRICS_TOKEN" in off.json()["errors"][0]["message"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = await scraper.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


async def test_counters_move_by_exactly_the_work_done(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    scraper: httpx.AsyncClient,
) -> None:
    await admin.data(UPSERT, {"m": [{"externalId": "m1"}, {"externalId": "m2"}]})
    await admin.data(
        CREATE, {"i": {"key": "visitors", "name": "v", "kind": "DYNAMIC", "rule": "count(visit) >= 1"}}
    )
    before = await scrape(scraper)
    results = (
        await integration.data(
            INGEST,
            {
                "e": [
                    event("a", "m1"),
                    event("b", "m2"),
                    event("a", "m1"),
                    event("c", "nobody"),
                    event("d", "m1", "Bad!"),
                ]
            },
        )
    )["recordEvents"]["results"]
    assert [r["status"] for r in results] == ["ACCEPTED", "ACCEPTED", "DUPLICATE", "REJECTED", "REJECTED"]
    await integration.data("{ program { key } }")
    await services.segments.recompute(program.id, ["visitors"])
    after = await scrape(scraper)

    assert moved(before, after, "loyalty_events_total", status="ACCEPTED") == 2
    assert moved(before, after, "loyalty_events_total", status="DUPLICATE") == 1
    assert moved(before, after, "loyalty_events_total", status="REJECTED") == 2
    assert moved(before, after, "loyalty_events_total", status="BLOCKED") == 0
    assert (
        moved(before, after, "loyalty_segment_evaluations_total", evaluator="memory") == 2
    )  # 2 members, 1 segment each
    assert moved(before, after, "loyalty_segment_evaluations_total", evaluator="sql") == 1
    assert moved(before, after, "loyalty_segment_changes_total", change="ENTERED") == 2
    assert moved(before, after, "loyalty_segment_changes_total", change="LEFT") == 0
    duration = "loyalty_graphql_request_duration_seconds_count"
    assert moved(before, after, duration, operation="Ingest", root_field="recordEvents") == 1
    assert moved(before, after, duration, operation="anonymous", root_field="program") == 1


async def test_a_rolled_back_change_is_not_counted(
    services: Services, program: ProgramFixture, admin: GraphQLClient, scraper: httpx.AsyncClient
) -> None:
    await admin.data(UPSERT, {"m": [{"externalId": "r1"}]})
    await admin.data(CREATE, {"i": {"key": "flagged", "name": "f", "kind": "STATIC"}})
    before = await scrape(scraper)
    async with services.db.read() as session:
        segment_id = await session.scalar(
            select(Segment.id).where(Segment.program_id == program.id, Segment.key == "flagged")
        )
        member_id = await session.scalar(select(Member.id).where(Member.program_id == program.id))
    assert segment_id is not None
    assert member_id is not None

    async def enter_then_fail() -> None:
        async with services.db.unit_of_work() as uow:
            flip = Flip(segment_id, "flagged", member_id, True, None)
            await services.segments.engine.apply(uow.session, program.id, [flip], services.clock.now())
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await enter_then_fail()
    assert moved(before, await scrape(scraper), "loyalty_segment_changes_total", change="ENTERED") == 0


async def test_backlogs_are_read_from_the_database_when_scraped(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    scraper: httpx.AsyncClient,
    clock: ShiftableClock,
) -> None:
    await admin.data(UPSERT, {"m": [{"externalId": f"b{i}"} for i in range(3)]})
    await admin.data(CREATE, {"i": {"key": "flagged", "name": "f", "kind": "STATIC"}})
    relay = ChangeRelay(services.db, services.redis, clock, gap_timeout=0)
    while await relay.run_once():  # published up to the log's end
        pass
    before = await scrape(scraper)
    assert value(before, "loyalty_backlogs_up") == 1
    assert value(before, "loyalty_relay_lag_changes") == 0
    now = clock.now()
    async with services.db.unit_of_work() as uow:
        session = uow.session
        members = list(await session.scalars(select(Member.id).where(Member.program_id == program.id)))
        segment_id = await session.scalar(
            select(Segment.id).where(Segment.program_id == program.id, Segment.key == "flagged")
        )
        await session.execute(
            update(Member).where(Member.id.in_(members)).values(segments_due_at=now - timedelta(minutes=10))
        )
        await session.execute(
            insert(SegmentChange),
            [
                {
                    "program_id": program.id,
                    "segment_id": segment_id,
                    "member_id": m,
                    "change": "ENTERED",
                    "at": now,
                }
                for m in members
            ],
        )
        outbox: list[dict[str, Any]] = [
            {
                "program_id": program.id,
                "kind": "WEBHOOK",
                "delivery_id": str(uuid.uuid4()),
                "payload": {},
                "status": status,
                "attempts": 0,
                "next_attempt_at": now - timedelta(minutes=5),
                "created_at": now - timedelta(minutes=5),
            }
            for status in ("PENDING", "PENDING", "DEAD")
        ]
        await session.execute(insert(OutboxItem), outbox)
        await session.execute(
            insert(StandingsFeed),
            [{"program_id": program.id, "member_id": m, "at": now} for m in members + members[:1]],
        )
    try:
        after = await scrape(scraper)
        assert moved(before, after, "loyalty_relay_lag_changes") == 3
        assert value(after, "loyalty_relay_lag_seconds") >= 0
        assert moved(before, after, "loyalty_time_flip_backlog") == 3
        assert value(after, "loyalty_time_flip_lag_seconds") >= 600
        assert moved(before, after, "loyalty_outbox_pending") == 2
        assert value(after, "loyalty_outbox_oldest_due_seconds") >= 300
        assert moved(before, after, "loyalty_outbox_dead") == 1
        assert moved(before, after, "loyalty_standings_feed_backlog") == 4
        while await relay.run_once():
            pass
        assert value(await scrape(scraper), "loyalty_relay_lag_changes") == 0
    finally:
        await relay.lease.release()
        async with services.db.unit_of_work() as uow:
            await uow.session.execute(
                update(Member).where(Member.id.in_(members)).values(segments_due_at=None)
            )
            await uow.session.execute(delete(OutboxItem).where(OutboxItem.program_id == program.id))
            await uow.session.execute(delete(StandingsFeed).where(StandingsFeed.program_id == program.id))


async def test_pool_use_counts_checked_out_connections(
    services: Services, scraper: httpx.AsyncClient
) -> None:
    idle = await scrape(scraper)
    async with services.db.engine.connect():
        busy = await scrape(scraper)
    assert moved(idle, busy, "loyalty_db_pool_checked_out") == 1
    assert value(busy, "loyalty_db_pool_size") >= 5


def test_operation_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_named", set())
    assert metrics.operation_label(None, "program") == "anonymous"
    assert metrics.operation_label("drop table;", "program") == "other"
    names = [f"Op{i}" for i in range(metrics.MAX_OPERATION_NAMES)]
    assert [metrics.operation_label(n, "program") for n in names] == names
    assert metrics.operation_label("OneTooMany", "program") == "other"
    assert metrics.operation_label("Op0", "program") == "Op0"  # known pairs keep their name
    assert metrics.operation_label("Op0", "members") == "other"


@pytest.mark.slow
async def test_any_worker_reports_every_worker_s_counts(settings: Settings, program: ProgramFixture) -> None:
    # given `loyalty serve --workers 2`, each worker with a pool of `pool` connections
    pool = cast(QueuePool, create_engine(settings.database_url, pool_size=3).sync_engine.pool).size()
    environ = {"LOYALTY_METRICS_TOKEN": TOKEN, "LOYALTY_DB_POOL_SIZE": "3"}
    async with running_server(settings, environ, workers=2) as server:

        async def scraped() -> Samples:
            async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:  # the workers share
                return await scrape(http)  # connections out: a new one may reach either

        # then a scrape, whichever worker answers it, adds up both workers' pools: two processes
        # contributed to it (the second worker may still be starting: a bounded poll)
        async def both_pools() -> bool:
            return value(await scraped(), "loyalty_db_pool_size") == 2 * pool

        await until(both_pools, "a scrape that reports both workers' pools")

        # and every scrape reports every event ingested, whichever worker took it
        base = await scraped()
        for i in range(6):
            await server.graphql(program.api_key, INGEST, {"e": [{**event(f"w{i}", "nobody")}]})
        for _ in range(6):
            assert moved(base, await scraped(), "loyalty_events_total", status="REJECTED") == 6


@pytest.mark.parametrize("pid", [os.getpid(), 999_999_999], ids=["our-pid", "a-pid-not-alive-here"])
def test_serve_s_metrics_directory_is_its_own_and_leaves_others_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid: int
) -> None:
    """Two containers sharing a data directory both run as PID 1, or see each other's PIDs as dead:
    a directory named by PID would be reused or swept while the other still writes to it."""
    # given another serve's live metrics directory where this one might look (its data directory)
    monkeypatch.setenv("LOYALTY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    theirs = tmp_path / f"loyalty-metrics-{pid}"
    theirs.mkdir()
    (theirs / "counter_7.db").write_bytes(b"their counts")

    # when serve --workers 2 sets up its own, then it is fresh, and removed when serve ends
    with serving._metrics_directory(workers=2):
        ours = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert list(ours.iterdir()) == []
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert not ours.exists()
    # and the other's is untouched
    assert (theirs / "counter_7.db").read_bytes() == b"their counts"
