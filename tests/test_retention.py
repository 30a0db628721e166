"""`loyalty prune`: removes exactly what it reports, and the engine's reads answer the same afterwards.

It runs on a database of its own: ids follow time in a real deployment, and the
test builds its history in that order (500 days ago, then 100, 10, today), so
it knows every row the prune may take.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.app import create_app
from api.runtime import Services, build_services
from domain.campaigns.delivery import OutboxDelivery
from domain.campaigns.messages import LoggingProvider
from domain.errors import InvalidInput
from domain.live.relay import ChangeRelay
from domain.models import Event, FraudFinding, Message, OutboxItem, Segment, SegmentChange
from domain.ops.retention import Pruner
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.backends import Backends, fresh_database
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token, new_program

RECORD = "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { externalId status } } }"
CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"
SET_TRIGGERS = """
mutation($k: String!, $t: [SegmentTriggerInput!]!) { setSegmentTriggers(segmentKey: $k, triggers: $t) { id } }"""
BOARD = '{ leaderboard(key: "points", period: ALL_TIME) { size top(first: 20) { rank score member { externalId } } } }'


@dataclass
class Fresh:
    services: Services
    http: httpx.AsyncClient


@pytest.fixture(scope="module")
def retention_database(backends: Backends) -> Iterator[str]:
    with fresh_database(backends, "retention") as url:
        yield url


@pytest.fixture
async def fresh(settings: Settings, retention_database: str, clock: ShiftableClock) -> AsyncIterator[Fresh]:
    prefix = f"{settings.redis_prefix}retention:"
    services = build_services(
        replace(settings, database_url=retention_database, redis_prefix=prefix), clock=clock
    )
    transport = httpx.ASGITransport(app=create_app(services), client=("10.250.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield Fresh(services, http)
    keys = [k async for k in services.redis.client.scan_iter(match=f"{prefix}*")]
    if keys:
        await services.redis.client.delete(*keys)
    await services.close()


def event(
    external_id: str, member: str, at: datetime, kind: str = "visit", **properties: str
) -> dict[str, Any]:
    amount = properties.pop("amount", None)
    return {
        "externalId": external_id,
        "memberExternalId": member,
        "type": kind,
        "occurredAt": at.isoformat(),
        "amount": amount,
        "properties": properties,
    }


async def record(pos: GraphQLClient, *events: dict[str, Any]) -> dict[str, str]:
    results = (await pos.data(RECORD, {"e": list(events)}))["recordEvents"]["results"]
    return {r["externalId"]: r["status"] for r in results}


async def dead_letter(services: Services, program: ProgramFixture, at: datetime) -> int:
    async with services.db.unit_of_work() as uow:
        row = OutboxItem(
            program_id=program.id,
            kind="WEBHOOK",
            delivery_id=str(uuid.uuid4()),
            payload={},
            status="DEAD",
            attempts=8,
            next_attempt_at=at,
            created_at=at,
            last_error="HTTP 500",
        )
        uow.session.add(row)
        await uow.session.flush()
        return row.id


async def ids(services: Services, column: Any, *where: Any) -> set[int]:
    async with services.db.read() as session:
        return set(await session.scalars(select(column).where(*where)))


async def replay(services: Services, program_id: int, since: str, count: int) -> list[int]:
    """The ids of the first `count` changes a subscription with `since` is sent."""
    stream = services.live.stream(program_id, None, since)
    try:
        return [(await asyncio.wait_for(anext(stream), 5)).id for _ in range(count)]
    finally:
        await stream.aclose()


async def test_prune_removes_exactly_what_it_reports_and_the_engine_reads_the_same(
    fresh: Fresh, clock: ShiftableClock
) -> None:
    services = fresh.services
    program = await new_program(services, auto_create=True)
    admin = GraphQLClient(fresh.http, await admin_token(fresh.http, program, clock))
    pos = GraphQLClient(fresh.http, program.api_key)
    delivery = OutboxDelivery(services.db, clock, LoggingProvider())
    relay = ChangeRelay(services.db, services.redis, clock, gap_timeout=0)

    # 500 days ago: three visitors enter "visitors" and get a welcome message (delivered); a reused
    # receipt is blocked, a big purchase held for review; the relay publishes all of it
    clock.shift(timedelta(days=-500))
    old = clock.now()
    await admin.data(
        CREATE, {"i": {"key": "visitors", "name": "v", "kind": "DYNAMIC", "rule": "count(visit) >= 1"}}
    )
    await admin.data(
        SET_TRIGGERS,
        {"k": "visitors", "t": [{"on": "ENTER", "action": "SEND_MESSAGE", "template": "welcome"}]},
    )
    # (the visitors accept push messages: consent)
    await admin.data(UPSERT, {"m": [{"externalId": f"m{i}", "channels": ["PUSH"]} for i in range(1, 6)]})
    assert await record(
        pos,
        event("v1", "m1", old),
        event("v2", "m2", old),
        event("v3", "m3", old),
        event("p1", "m1", old, "purchase", amount="10", receiptId="R1"),
        event("p2", "m2", old, "purchase", amount="10", receiptId="R1"),
        event("p3", "m3", old, "purchase", amount="6000"),
    ) == {
        "v1": "ACCEPTED",
        "v2": "ACCEPTED",
        "v3": "ACCEPTED",
        "p1": "ACCEPTED",
        "p2": "BLOCKED",
        "p3": "HELD_FOR_REVIEW",
    }
    while await delivery.run_once():
        pass
    while await relay.run_once():
        pass
    await relay.lease.release()
    relayed = max(await ids(services, SegmentChange.id))
    # still 500 days ago, after the relay's pass: a fourth visitor, not relayed, its message queued
    assert await record(pos, event("v5", "m5", old)) == {"v5": "ACCEPTED"}
    clock.shift(timedelta(days=400))  # 100 days ago
    dead_old = await dead_letter(services, program, clock.now())
    clock.shift(timedelta(days=90))  # 10 days ago
    dead_recent = await dead_letter(services, program, clock.now())
    clock.reset()  # today: a fifth visitor, and the receipt reused once more
    assert await record(
        pos,
        event("v4", "m4", clock.now()),
        event("p4", "m4", clock.now(), "purchase", amount="5", receiptId="R1"),
    ) == {"v4": "ACCEPTED", "p4": "BLOCKED"}

    cutoff = clock.now() - timedelta(days=400)
    old_changes = await ids(services, SegmentChange.id, SegmentChange.at < cutoff)
    old_events = await ids(services, Event.id, Event.received_at < cutoff)
    held_event = await ids(services, Event.id, Event.external_id == "p3")
    expected = {
        "segment_changes": old_changes - {c for c in old_changes if c > relayed},
        "outbox DELIVERED": await ids(services, OutboxItem.id, OutboxItem.status == "DELIVERED"),
        "outbox DEAD": {dead_old},
        "messages": await ids(services, Message.id, Message.status == "SENT"),
        "fraud_findings": await ids(
            services, FraudFinding.id, FraudFinding.at < cutoff, FraudFinding.event_id.not_in(held_event)
        ),
    }
    assert [len(v) for v in expected.values()] == [3, 3, 1, 3, 1]
    reused = await ids(services, Event.id, Event.program_id == program.id, Event.external_id == "p2")
    assert expected["fraud_findings"] == await ids(  # the blocked reuse of R1, 500 days ago
        services, FraudFinding.id, FraudFinding.event_id.in_(reused)
    )
    everything = {
        "segment_changes": await ids(services, SegmentChange.id),
        "outbox": await ids(services, OutboxItem.id),
        "messages": await ids(services, Message.id),
        "fraud_findings": await ids(services, FraudFinding.id),
        "events": await ids(services, Event.id),
    }
    assert dead_recent in everything["outbox"]
    assert len(old_events) == 10  # 7 recorded, and the 3 messages sent then (message_sent events)

    async def reads() -> dict[str, Any]:
        today = clock.now().date()
        segment_id = (await ids(services, Segment.id, Segment.key == "visitors")).pop()
        await services.leaderboards.rebuild([program.id])
        return {
            "history": await services.segments.history(segment_id, clock.now() - timedelta(days=29), None),
            "report": await services.analytics.report(
                program.id, "visitors", today - timedelta(days=29), today
            ),
            "replay": await replay(services, program.id, str(relayed), 2),
            "board": await admin.data(BOARD),
            "resent": await record(
                pos, event("v1", "m1", old), event("p2", "m2", old, "purchase", amount="10")
            ),
        }

    before = await reads()
    assert [p.size for p in before["history"]][-1] == 5
    assert await replay(services, program.id, "0", 5) == sorted(everything["segment_changes"])

    pruner = Pruner(services.db, clock, services.settings.retention, batch=2)
    planned = await pruner.run(dry_run=True)
    pruned = await pruner.run(dry_run=False)

    counts = [len(v) for v in expected.values()]
    assert [p.rows for p in planned] == counts
    assert [p.rows for p in pruned] == counts
    assert [p.rows for p in await pruner.run(dry_run=True)] == [0, 0, 0, 0, 0]
    assert (
        await ids(services, SegmentChange.id) == everything["segment_changes"] - expected["segment_changes"]
    )
    assert await ids(services, OutboxItem.id) == (
        everything["outbox"] - expected["outbox DELIVERED"] - expected["outbox DEAD"]
    )
    assert await ids(services, Message.id) == everything["messages"] - expected["messages"]
    assert await ids(services, FraudFinding.id) == everything["fraud_findings"] - expected["fraud_findings"]
    assert await ids(services, Event.id) == everything["events"]
    assert await reads() == before
    with pytest.raises(InvalidInput, match="were pruned"):
        await replay(services, program.id, "0", 1)
