"""The relay publishes the committed change log to Redis: in log order, once, surviving restarts and gaps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio.client import PubSub
from sqlalchemy import insert, select

from api.runtime import Services
from domain.live.messages import LiveChange, decode
from domain.live.relay import POSITION, ChangeRelay, changes_channel
from domain.models import RelayPosition, Segment, SegmentChange
from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.test_live import join
from tests.test_segments_api import create


@pytest.fixture
async def listening(services: Services, program: ProgramFixture) -> AsyncIterator[PubSub]:
    async with services.redis.client.pubsub() as pubsub:
        await pubsub.subscribe(changes_channel(services.redis, program.id))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        yield pubsub


async def published(pubsub: PubSub, wait: float = 0.5) -> list[LiveChange]:
    found: list[LiveChange] = []
    while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)) is not None:
        found.extend(decode(message["data"]))
    return found


async def relay_until_idle(relay: ChangeRelay) -> None:
    while await relay.run_once():
        pass


def log_row(program: ProgramFixture, segment_id: int, member_id: int, change: str) -> dict[str, object]:
    return {
        "program_id": program.id,
        "segment_id": segment_id,
        "member_id": member_id,
        "change": change,
        "at": datetime.now(UTC),
    }


async def log_rows(services: Services, program: ProgramFixture, members: list[int], segment_id: int) -> None:
    """Commit an ENTERED row per member, as a transaction of the engine would."""
    async with services.db.unit_of_work() as uow:
        await uow.session.execute(
            insert(SegmentChange), [log_row(program, segment_id, m, "ENTERED") for m in members]
        )


async def member_ids(services: Services, program: ProgramFixture) -> list[int]:
    from domain.models import Member

    async with services.db.read() as session:
        return list(
            await session.scalars(
                select(Member.id).where(Member.program_id == program.id).order_by(Member.id)
            )
        )


async def segment_id(services: Services, program: ProgramFixture, key: str) -> int:
    async with services.db.read() as session:
        query = select(Segment.id).where(Segment.program_id == program.id, Segment.key == key)
        found: int = (await session.scalars(query)).one()
        return found


@pytest.fixture
async def relay(services: Services, clock: ShiftableClock) -> AsyncIterator[ChangeRelay]:
    """A relay that holds the lease (no server process runs in these tests) and starts at the log's end."""
    relay = ChangeRelay(services.db, services.redis, clock, batch=3, gap_timeout=0.3)
    await relay_until_idle(relay)
    await asyncio.sleep(0.35)  # gaps earlier tests' rollbacks left time out
    await relay_until_idle(relay)
    yield relay
    await relay.lease.release()


async def test_rows_are_published_once_in_log_order_in_batches(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    relay: ChangeRelay,
    listening: PubSub,
) -> None:
    await create(admin, "flagged", 'has_tag("flagged")')
    await join(integration, *(f"r{i}" for i in range(7)))
    members = await member_ids(services, program)
    await log_rows(services, program, members, await segment_id(services, program, "flagged"))
    assert await relay.run_once() is True  # a full batch of 3: there may be more
    await relay_until_idle(relay)
    got = await published(listening)
    assert [c.member_external_id for c in got] == [f"r{i}" for i in range(7)]
    assert [c.id for c in got] == sorted(c.id for c in got)
    await relay_until_idle(relay)
    assert await published(listening, wait=0.2) == []  # nothing twice


async def test_a_new_relay_resumes_from_the_stored_position_so_a_crash_loses_nothing(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    relay: ChangeRelay,
    listening: PubSub,
    clock: ShiftableClock,
) -> None:
    await create(admin, "flagged", 'has_tag("flagged")')
    await join(integration, "x1", "x2")
    members = await member_ids(services, program)
    await log_rows(services, program, members, await segment_id(services, program, "flagged"))
    await relay.lease.release()  # the process "crashed" after commit, before publishing
    successor = ChangeRelay(services.db, services.redis, clock, batch=3, gap_timeout=0.3)
    try:
        await relay_until_idle(successor)
    finally:
        await successor.lease.release()
    assert [c.member_external_id for c in await published(listening)] == ["x1", "x2"]
    async with services.db.read() as session:
        stored = await session.scalar(select(RelayPosition.position).where(RelayPosition.name == POSITION))
    assert stored == max(c.id for c in await _all_rows(services, program))


async def _all_rows(services: Services, program: ProgramFixture) -> list[SegmentChange]:
    async with services.db.read() as session:
        return list(
            await session.scalars(select(SegmentChange).where(SegmentChange.program_id == program.id))
        )


async def test_only_the_lease_holder_relays(
    services: Services, relay: ChangeRelay, clock: ShiftableClock
) -> None:
    other = ChangeRelay(services.db, services.redis, clock)
    assert await relay.lease.hold()
    assert not await other.lease.hold()
    assert await other.run_once() is False
    await relay.lease.release()
    assert await other.lease.hold()
    await other.lease.release()


async def test_a_gap_holds_later_rows_back_until_it_commits_or_times_out(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    relay: ChangeRelay,
    listening: PubSub,
) -> None:
    if services.db.dialect != "postgresql":
        pytest.skip("SQLite has one writer: ids commit in order and gaps cannot form")
    await create(admin, "flagged", 'has_tag("flagged")')
    await join(integration, "early", "late")
    early, late = await member_ids(services, program)
    flagged = await segment_id(services, program, "flagged")
    # a slow transaction takes an id first and has not committed when a later one does
    async with services.db.sessions() as slow:
        await slow.begin()
        await slow.execute(insert(SegmentChange).values(log_row(program, flagged, early, "ENTERED")))
        await log_rows(services, program, [late], flagged)
        await relay_until_idle(relay)
        assert await published(listening, wait=0.1) == []  # "late" waits behind the open gap
        await slow.commit()
    await relay_until_idle(relay)
    assert [c.member_external_id for c in await published(listening)] == ["early", "late"]

    # a gap that does not commit within gap_timeout (usually a rollback) is skipped after gap_timeout; if rows appear there
    # afterwards they are still published (a long transaction that committed late)
    async with services.db.sessions() as long_running:
        await long_running.begin()
        await long_running.execute(insert(SegmentChange).values(log_row(program, flagged, early, "LEFT")))
        await log_rows(services, program, [late], flagged)
        await relay_until_idle(relay)
        await asyncio.sleep(0.4)
        await relay_until_idle(relay)
        assert [c.change for c in await published(listening)] == ["ENTERED"]  # "late" after the timeout
        await long_running.commit()  # ...and the "gap" commits after all
    await relay_until_idle(relay)
    got = await published(listening)
    assert [(c.member_external_id, c.change) for c in got] == [("early", "LEFT")]
