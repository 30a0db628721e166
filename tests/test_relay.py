"""The relay publishes the committed change log to Redis: in log order, once, surviving restarts and gaps."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import orjson
import pytest
from redis.exceptions import NoPermissionError
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.runtime import Services
from domain.live.messages import LiveChange, Relayed, decode
from domain.live.relay import ChangeRelay, changes_channel
from domain.models import SegmentChange
from domain.redis_store import Listener, RedisStore
from tests.support import ShiftableClock
from tests.support.changelog import (
    log_row,
    log_rows,
    member_ids,
    program_changes,
    relayed_through,
    segment_id,
)
from tests.support.events import join
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token, new_program
from tests.support.outage import redis_server
from tests.support.segments import create


@pytest.fixture
async def listening(services: Services) -> AsyncIterator[Listener]:
    async with services.redis.listen(changes_channel(services.redis)) as listener:
        yield listener


async def heard(listener: Listener, wait: float = 0.5) -> list[Relayed]:
    """The relayed messages, until none comes for `wait` seconds."""
    found: list[Relayed] = []
    while (message := await listener.get_message(wait)) is not None:
        found.append(decode(message["data"]))
    return found


async def published(listener: Listener, wait: float = 0.5) -> list[LiveChange]:
    return [change for message in await heard(listener, wait) for change in message.changes]


async def relay_until_idle(relay: ChangeRelay) -> None:
    while await relay.run_once():
        pass


async def flagged_members(
    services: Services, program: ProgramFixture, admin: GraphQLClient, integration: GraphQLClient, *names: str
) -> tuple[int, list[int]]:
    """A "flagged" segment and members with these external ids: the segment's id and theirs, in order."""
    await create(admin, "flagged", 'has_tag("flagged")')
    await join(integration, *names)
    return await segment_id(services, program, "flagged"), await member_ids(services, program)


def skip_unless_gaps_can_form(services: Services) -> None:
    if services.db.dialect != "postgresql":
        pytest.skip("SQLite has one writer: ids commit in order and gaps cannot form")


@contextlib.asynccontextmanager
async def uncommitted(
    services: Services, program: ProgramFixture, segment: int, member: int, change: str
) -> AsyncIterator[AsyncSession]:
    """A transaction that has taken a log id for a change and not committed it yet (the caller does)."""
    async with services.db.sessions() as session:
        await session.begin()
        await session.execute(insert(SegmentChange).values(log_row(program, segment, member, change)))
        yield session


@pytest.fixture
async def relay(services: Services, clock: ShiftableClock) -> AsyncIterator[ChangeRelay]:
    """A relay that holds the lease and starts at the log's end. It takes the lease over: a server
    process of an earlier test that could not release it (its Redis was cut) holds it for 10 s more."""
    relay = ChangeRelay(services.db, services.redis, clock, batch=3, gap_timeout=0.3)
    await relay.lease.take_over()
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
    listening: Listener,
) -> None:
    flagged, members = await flagged_members(
        services, program, admin, integration, *(f"r{i}" for i in range(7))
    )
    await log_rows(services, program, members, flagged)
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
    listening: Listener,
    clock: ShiftableClock,
) -> None:
    flagged, members = await flagged_members(services, program, admin, integration, "x1", "x2")
    await log_rows(services, program, members, flagged)
    await relay.lease.release()  # the process "crashed" after commit, before publishing
    successor = ChangeRelay(services.db, services.redis, clock, batch=3, gap_timeout=0.3)
    try:
        await relay_until_idle(successor)
    finally:
        await successor.lease.release()
    assert [c.member_external_id for c in await published(listening)] == ["x1", "x2"]
    assert await relayed_through(services) == max(c.id for c in await _all_rows(services, program))


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
    listening: Listener,
) -> None:
    skip_unless_gaps_can_form(services)
    flagged, (early, late) = await flagged_members(services, program, admin, integration, "early", "late")
    # a slow transaction takes an id first and has not committed when a later one does
    async with uncommitted(services, program, flagged, early, "ENTERED") as slow:
        await log_rows(services, program, [late], flagged)
        await relay_until_idle(relay)
        assert await published(listening, wait=0.1) == []  # "late" waits behind the open gap
        await slow.commit()
    await relay_until_idle(relay)
    assert [c.member_external_id for c in await published(listening)] == ["early", "late"]

    # a gap that does not commit within gap_timeout (usually a rollback) is skipped after gap_timeout; if rows appear there
    # afterwards they are still published (a long transaction that committed late)
    async with uncommitted(services, program, flagged, early, "LEFT") as long_running:
        await log_rows(services, program, [late], flagged)
        await relay_until_idle(relay)
        await asyncio.sleep(0.4)
        await relay_until_idle(relay)
        assert [c.change for c in await published(listening)] == ["ENTERED"]  # "late" after the timeout
        await long_running.commit()  # ...and the "gap" commits after all
    await relay_until_idle(relay)
    got = await published(listening)
    assert [(c.member_external_id, c.change) for c in got] == [("early", "LEFT")]


async def interleaving(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    client: httpx.AsyncClient,
    clock: ShiftableClock,
) -> tuple[ProgramFixture, Callable[[], Awaitable[None]]]:
    """Another program, and a step that logs changes of both, interleaved: p1 (this program's member),
    q1 (the other's), p2 (this program's)."""
    other = await new_program(services)
    await create(GraphQLClient(client, await admin_token(client, other, clock)), "vip", 'has_tag("vip")')
    await join(GraphQLClient(client, other.api_key), "q1")
    [other_member] = await member_ids(services, other)
    other_segment = await segment_id(services, other, "vip")
    flagged, (first, second) = await flagged_members(services, program, admin, integration, "p1", "p2")

    async def log() -> None:
        await log_rows(services, program, [first], flagged)
        await log_rows(services, other, [other_member], other_segment)
        await log_rows(services, program, [second], flagged)

    return other, log


async def test_every_pass_publishes_the_next_link_of_one_chain_for_all_programs(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    relay: ChangeRelay,
    listening: Listener,
    client: httpx.AsyncClient,
    clock: ShiftableClock,
) -> None:
    # given changes of two programs, interleaved in the log
    other, log_interleaved = await interleaving(services, program, admin, integration, client, clock)
    start = await relayed_through(services)
    await log_interleaved()

    # when the relay runs until it is idle, and once more
    await relay_until_idle(relay)
    await relay.run_once()

    # then the messages are links of one chain: each starts where the one before ended, the changes
    # of both programs in log order (batches of 3), and an idle pass sends a heartbeat
    messages = await heard(listening)
    assert messages[0].after == start
    assert all(m.after == previous.through for previous, m in itertools.pairwise(messages))
    changes = [c for m in messages for c in m.changes]
    assert [(c.program_id, c.member_external_id) for c in changes] == [
        (program.id, "p1"),
        (other.id, "q1"),
        (program.id, "p2"),
    ]
    assert all(m.after < c.id <= m.through for m in messages for c in m.changes)
    end = await relayed_through(services)
    assert messages[-1] == Relayed(end, end, [])
    assert end == changes[-1].id


async def test_for_one_release_the_relay_also_publishes_the_previous_release_s_per_program_messages(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    relay: ChangeRelay,
    client: httpx.AsyncClient,
    clock: ShiftableClock,
) -> None:
    if services.redis.is_cluster:
        pytest.skip(
            "no previous release ran on a Redis Cluster: the relay publishes no legacy messages there"
        )
    # given a process of the previous release listening: one channel per program, by pattern
    other, log_interleaved = await interleaving(services, program, admin, integration, client, clock)
    async with services.redis.client.pubsub() as previous:
        await previous.psubscribe(f"{services.redis.prefix}live:changes:*")
        await previous.get_message(timeout=1)  # the subscribe confirmation

        # when changes of two programs are relayed
        await log_interleaved()
        await relay_until_idle(relay)
        await relay.run_once()  # an idle pass: a heartbeat on the chain, nothing on these channels

        # then it hears each program's changes on that program's channel, as a list of rows
        by_channel: dict[str, list[list[object]]] = {}
        while (
            message := await previous.get_message(ignore_subscribe_messages=True, timeout=0.5)
        ) is not None:
            by_channel.setdefault(message["channel"], []).extend(orjson.loads(message["data"]))
    ours, theirs = await program_changes(services, program), await program_changes(services, other)
    assert by_channel == {
        f"{services.redis.prefix}live:changes:{p}": [
            [c.id, c.program_id, c.segment_key, c.member_external_id, c.change, c.at.isoformat()]
            for c in rows
        ]
        for p, rows in ((program.id, ours), (other.id, theirs))
    }
    assert [c.member_external_id for c in ours + theirs] == ["p1", "p2", "q1"]


@dataclass
class Isolated:
    """A relay on a Redis of the test's own (whose ACL the test may change), at the log's end, and a
    subscription to what it publishes."""

    relay: ChangeRelay
    store: RedisStore
    listener: Listener

    async def refuse_publish(self, refused: bool) -> None:
        """Make Redis answer PUBLISH with NOPERM (a real failure of the command), or accept it again."""
        command = "-publish" if refused else "+publish"
        await self.store.client.acl_setuser("default", enabled=True, nopass=True, commands=[command])


@pytest.fixture
async def isolated(services: Services, clock: ShiftableClock) -> AsyncIterator[Isolated]:
    async with redis_server() as own:
        store = RedisStore(own.url, services.settings.redis_prefix, services.settings.data_dir)
        relay = ChangeRelay(services.db, store, clock, gap_timeout=0)
        try:
            await relay_until_idle(relay)
            async with store.listen(changes_channel(store)) as listener:
                yield Isolated(relay, store, listener)
        finally:
            await relay.lease.release()
            await store.close()


async def test_a_failed_publish_moves_nothing_and_the_next_pass_publishes_the_same_changes(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    isolated: Isolated,
) -> None:
    # given two new changes
    flagged, members = await flagged_members(services, program, admin, integration, "f1", "f2")
    await log_rows(services, program, members, flagged)
    before = await relayed_through(services)

    # when Redis refuses PUBLISH for one pass
    await isolated.refuse_publish(True)
    with pytest.raises(NoPermissionError):
        await isolated.relay.run_once()

    # then the position stays where it was
    assert await relayed_through(services) == before

    # and once PUBLISH works again the next pass publishes the changes, from the same place
    await isolated.refuse_publish(False)
    await relay_until_idle(isolated.relay)
    messages = await heard(isolated.listener)
    assert messages[0].after == before
    assert [c.member_external_id for m in messages for c in m.changes] == ["f1", "f2"]
    assert await relayed_through(services) == messages[0].through


async def test_a_late_commit_whose_publish_failed_is_published_by_the_next_pass(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    isolated: Isolated,
) -> None:
    skip_unless_gaps_can_form(services)
    # given a change the relay skipped as a gap (its transaction was still open), committed late
    flagged, (slow, quick) = await flagged_members(services, program, admin, integration, "slow", "quick")
    async with uncommitted(services, program, flagged, slow, "ENTERED") as long_running:
        await log_rows(services, program, [quick], flagged)
        await relay_until_idle(isolated.relay)
        await long_running.commit()
    assert [c.member_external_id for c in await published(isolated.listener)] == ["quick"]

    # when the pass that finds it cannot publish
    await isolated.refuse_publish(True)
    with pytest.raises(NoPermissionError):
        await isolated.relay.run_once()

    # then the next one publishes it
    await isolated.refuse_publish(False)
    await relay_until_idle(isolated.relay)
    late = await heard(isolated.listener)
    assert [c.member_external_id for m in late for c in m.changes] == ["slow"]
    assert all(c.id <= m.after for m in late for c in m.changes)  # marked late: before the chain's position
