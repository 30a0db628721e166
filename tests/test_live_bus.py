"""A process that misses relayed changes notices it from the chain and replays them from the log, or
closes the subscriptions concerned with the cursor to resume from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from api.runtime import Services
from domain.db.engine import Database, create_engine
from domain.live.bus import ChangesMissed, LiveBus
from domain.live.messages import LiveChange, Relayed, encode
from domain.live.relay import REPLAY_PAGE, changes_channel, log_end
from domain.live.sequence import Missed, RelayedSequence
from domain.live.service import LiveService
from domain.redis_store import RedisStore
from tests.support.changelog import log_rows, member_ids, program_changes, segment_id
from tests.support.events import join
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.live import change
from tests.support.outage import redis_server, until
from tests.support.proxy import tcp_proxy
from tests.support.segments import create


def ids(changes: list[LiveChange]) -> list[int]:
    return [c.id for c in changes]


def bus_events() -> dict[str, float]:
    """loyalty_live_bus_total by event, as this process exports it on /metrics."""
    return {
        sample.labels["event"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "loyalty_live_bus"
        for sample in metric.samples
        if sample.name == "loyalty_live_bus_total"
    }


def counted(before: dict[str, float], *events: str) -> tuple[float, ...]:
    """How much each of `events` was counted since `before`."""
    after = bus_events()
    return tuple(after[e] - before.get(e, 0.0) for e in events)


async def following(stream: AsyncIterator[LiveChange]) -> LiveChange:
    """The stream's next change (a coroutine, for a task)."""
    return await anext(stream)


# ---------- the chain, without I/O ----------


def test_a_message_that_starts_beyond_the_position_reports_the_range_missed() -> None:
    sequence = RelayedSequence()
    sequence.anchor(10)
    assert sequence.take(Relayed(10, 12, [change(11), change(12)])) == (None, [change(11), change(12)])
    missed, fresh = sequence.take(Relayed(15, 17, [change(16), change(17)]))
    assert missed == Missed(12, 15)
    assert ids(fresh) == [16, 17]
    assert sequence.position == 17
    assert sequence.take(Relayed(17, 17, [])) == (None, [])  # a heartbeat that follows on


def test_a_republished_or_overlapping_message_hands_out_only_what_is_new() -> None:
    sequence = RelayedSequence()
    sequence.anchor(10)
    sequence.take(Relayed(10, 17, [change(i) for i in range(11, 18)]))
    assert sequence.take(Relayed(10, 12, [change(11), change(12)])) == (None, [])
    assert ids(sequence.take(Relayed(15, 20, [change(i) for i in range(16, 21)]))[1]) == [18, 19, 20]


def test_a_late_change_is_handed_out_once_and_in_a_missed_range_comes_with_its_replay() -> None:
    sequence = RelayedSequence()
    sequence.anchor(20)
    assert ids(sequence.take(Relayed(20, 20, [change(13)]))[1]) == [13]
    assert sequence.take(Relayed(20, 20, [change(13)])) == (None, [])  # published again
    missed, fresh = sequence.take(Relayed(25, 26, [change(22), change(26)]))
    assert missed == Missed(20, 25)
    assert ids(fresh) == [26]
    sequence.remember([22])  # the replay of 21..25 handed it out
    assert sequence.take(Relayed(26, 26, [change(22)])) == (None, [])


@given(
    log=st.lists(st.booleans(), min_size=1, max_size=60),  # per id: committed (True) or rolled back
    per_message=st.integers(1, 5),
    heard=st.lists(st.sampled_from(["heard", "lost", "twice"]), min_size=80, max_size=80),
)
def test_whatever_a_process_hears_of_the_chain_it_hands_out_every_change_once_in_log_order(
    log: list[bool], per_message: int, heard: list[str]
) -> None:
    committed = [i + 1 for i, kept in enumerate(log) if kept]
    messages: list[Relayed] = []
    after = 0
    for start in range(0, len(committed), per_message):
        chunk = committed[start : start + per_message]
        messages.append(Relayed(after, chunk[-1], [change(i) for i in chunk]))
        after = chunk[-1]
    messages.append(Relayed(after, after, []))  # the heartbeat of the next idle pass, always heard
    sequence = RelayedSequence()
    sequence.anchor(0)
    handed: list[int] = []
    for message, fate in zip(messages, [*heard[: len(messages) - 1], "heard"], strict=True):
        for _ in range({"heard": 1, "lost": 0, "twice": 2}[fate]):
            missed, fresh = sequence.take(message)
            if missed is not None:
                handed.extend(i for i in committed if missed.after < i <= missed.through)
            handed.extend(ids(fresh))
    assert handed == committed


# ---------- replaying from the log ----------


@pytest.fixture
def broken_db(tmp_path: Path) -> Database:
    """A database that cannot be reached: a real engine on a file in a directory that does not exist."""
    return Database(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}"))


async def test_a_process_that_missed_relayed_changes_replays_them_from_the_log_before_going_on(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a bus that heard the chain up to just before the program's changes, and two subscribers
    await create(admin, "vip", 'has_tag("vip")')
    await create(admin, "flagged", 'has_tag("flagged")')
    await join(integration, "m1", "m2", "m3")
    members = await member_ids(services, program)
    vip, flagged = await segment_id(services, program, "vip"), await segment_id(services, program, "flagged")
    bus = LiveBus(services.redis, services.db)
    for member in members:  # vip, flagged, vip, flagged...
        await log_rows(services, program, [member], vip)
        await log_rows(services, program, [member], flagged)
    rows = await program_changes(services, program)
    bus.sequence.anchor(rows[0].id - 1)
    before = bus_events()
    with bus.subscribe(program.id, None) as everything, bus.subscribe(program.id, frozenset({"vip"})) as vips:
        # when the message it hears next starts after the fourth change (it missed the first four)
        with caplog.at_level(logging.INFO, logger="domain.live.bus"):
            await bus.receive(Relayed(rows[3].id, rows[5].id, rows[4:]))

        # then each subscriber gets all of its changes, replayed and relayed, in log order
        assert [await everything.next(None) for _ in rows] == rows
        assert [await vips.next(None) for _ in range(3)] == [r for r in rows if r.segment_key == "vip"]
    assert counted(before, "gaps_detected", "gaps_replayed", "changes_replayed") == (1, 1, 4)
    assert f"missed relayed changes (log ids {rows[0].id}..{rows[3].id}" in caplog.text
    assert "replayed 4 missed changes to 2 local subscriptions" in caplog.text


async def test_when_the_replay_fails_the_subscription_is_closed_with_the_cursor_of_its_last_change(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    broken_db: Database,
) -> None:
    # given a subscriber on a bus that cannot read the log, sent one change live
    await create(admin, "vip", 'has_tag("vip")')
    await join(integration, "m1", "m2", "m3")
    members = await member_ids(services, program)
    vip = await segment_id(services, program, "vip")
    start = await end_of_log(services)
    bus = LiveBus(services.redis, broken_db)
    bus.sequence.anchor(start)
    stream = LiveService(services.db, bus).stream(program.id, None, str(start))
    first = asyncio.create_task(following(stream))
    await until(lambda: bus.subscriber_count == 1, "the subscriber registered")
    await log_rows(services, program, members[:1], vip)
    [sent] = await program_changes(services, program)
    await bus.receive(Relayed(start, sent.id, [sent]))
    assert await first == sent

    # when two more commit and the bus misses them and cannot replay them
    await log_rows(services, program, members[1:], vip)
    rows = await program_changes(services, program)
    before = bus_events()
    await bus.receive(Relayed(rows[-1].id, rows[-1].id, []))

    # then the subscription ends, naming the cursor of the last change it was sent
    with pytest.raises(ChangesMissed) as missed:
        await anext(stream)
    assert missed.value.message == (
        f'interrupted: changes were missed while Redis was unreachable; resume with since: "{sent.id}"'
    )
    assert counted(before, "subscribers_closed") == (1,)

    # and resuming from it yields exactly the rest
    resumed = services.live.stream(program.id, None, str(sent.id))
    assert [await anext(resumed), await anext(resumed)] == rows[1:]
    await resumed.aclose()


async def test_a_subscription_closed_before_it_was_sent_anything_names_where_it_started(
    services: Services, program: ProgramFixture, broken_db: Database
) -> None:
    # given a subscriber without since, on a bus that cannot read the log
    start = await end_of_log(services)
    bus = LiveBus(services.redis, broken_db)
    bus.sequence.anchor(start)
    stream = LiveService(services.db, bus).stream(program.id, None, None)
    waiting = asyncio.create_task(following(stream))
    await until(lambda: bus.subscriber_count == 1, "the subscriber registered")

    # when the bus misses changes and cannot replay them
    await bus.receive(Relayed(start + 1, start + 1, []))

    # then the subscription ends with the log's end when it subscribed, not "no since"
    with pytest.raises(ChangesMissed) as missed:
        await waiting
    assert missed.value.resume_after == start


async def test_a_replay_of_several_pages_overflowed_by_live_changes_reads_on_from_the_log(
    services: Services, program: ProgramFixture, admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given more changes after a cursor than one page of the log holds, and a queue of 10
    await create(admin, "vip", 'has_tag("vip")')
    await join(integration, "m1")
    [member] = await member_ids(services, program)
    vip = await segment_id(services, program, "vip")
    start = await end_of_log(services)
    await log_rows(services, program, [member] * (REPLAY_PAGE + 100), vip)
    bus = LiveBus(services.redis, services.db, queue_capacity=10)
    bus.sequence.anchor(start)
    stream = LiveService(services.db, bus).stream(program.id, None, str(start))
    received = [await anext(stream)]

    # when 30 more commit and are relayed while the replay is on its first page (the queue overflows)
    await log_rows(services, program, [member] * 30, vip)
    rows = await program_changes(services, program)
    await bus.receive(Relayed(start, rows[-1].id, rows))

    # then the subscriber gets every change once, in log order, then the next one relayed
    received += [await anext(stream) for _ in rows[1:]]
    assert received == rows
    await log_rows(services, program, [member], vip)
    [*_, last] = await program_changes(services, program)
    await bus.receive(Relayed(rows[-1].id, last.id, [last]))
    assert await anext(stream) == last
    await stream.aclose()


async def end_of_log(services: Services) -> int:
    async with services.db.read() as session:
        return await log_end(session)


# ---------- what arrives on the connection ----------


async def test_a_malformed_message_is_logged_and_skipped_and_the_next_one_handed_out(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    # given a listening bus, and a subscriber of a program
    bus = LiveBus(services.redis, services.db)
    bus.sequence.anchor(10)
    before = bus_events()
    woken: list[list[str]] = []
    await bus.start(lambda topics: woken.append(sorted(topics)))
    publisher = services.redis
    try:
        await until(lambda: woken == [["*"]], "the bus subscribed")
        with bus.subscribe(1, None) as subscriber, caplog.at_level(logging.WARNING, logger="domain.live.bus"):
            # when malformed messages arrive on both channels (not JSON, another shape, the format of
            # an older release), then a relayed change
            for body in (b"{", b'{"after": 10}', b'[[11, 1, "vip", "m11", "ENTERED", "2025-01-01"]]'):
                await publisher.publish(changes_channel(services.redis), body)
            for body in (b"{", b"123", b'[1, "x"]'):
                await publisher.publish(bus.wake_channel, body)
            await publisher.publish(changes_channel(services.redis), encode(Relayed(10, 11, [change(11)])))

            # then the change is handed out, on the same connection, and each bad message is logged
            assert await asyncio.wait_for(subscriber.next(None), 10) == change(11)
        assert counted(before, "reconnects") == (0,)
        assert caplog.text.count("live bus: skipped a malformed message") == 6
        assert woken == [["*"]]
    finally:
        await bus.stop()


async def test_stop_cancels_the_announcements_still_being_published(services: Services) -> None:
    # given a bus whose Redis connection hangs (open, but nothing crosses it any more)
    async with redis_server() as redis, tcp_proxy("127.0.0.1", redis.port) as cable:
        store = RedisStore(cable.redis_url, services.redis.prefix, services.settings.data_dir)
        bus = LiveBus(store, services.db)
        await store.client.ping()  # the pooled connection the announcement will use
        await cable.stall()
        try:
            # when a commit is announced, and the bus stops while that PUBLISH waits
            running = asyncio.all_tasks()
            bus.announce({"news"})
            [announcement] = asyncio.all_tasks() - running
            await bus.stop()

            # then the announcement ended with the bus (it does not outlive it to use a closed client)
            assert announcement.cancelled()
        finally:
            await store.close()


# ---------- a connection that is open but dead ----------


async def test_a_pub_sub_connection_that_falls_silent_is_replaced(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    # given a bus listening through a proxy, with short silence and PING bounds
    async with redis_server() as redis, tcp_proxy("127.0.0.1", redis.port) as cable:
        store = RedisStore(cable.redis_url, services.redis.prefix, services.settings.data_dir)
        bus = LiveBus(store, services.db, silence_s=0.5, ping_timeout_s=0.5)
        bus.sequence.anchor(0)
        before = bus_events()
        woken: list[list[str]] = []
        await bus.start(lambda topics: woken.append(sorted(topics)))
        try:
            publisher = Redis.from_url(redis.url)
            await until(lambda: woken == [["*"]], "the bus subscribed")

            async def hears(topic: str) -> bool:
                await publisher.publish(bus.wake_channel, orjson.dumps([topic]))
                await asyncio.sleep(0.05)
                return [topic] in woken

            await until(lambda: hears("before"), "the bus hears its channel")

            # when the connection stays open but nothing crosses it any more (a half-open connection)
            with caplog.at_level(logging.WARNING, logger="domain.live.bus"):
                await cable.stall()

                # then the bus notices from an unanswered PING, connects again and hears what follows
                await until(lambda: hears("after"), "the bus hears its channel on a new connection")
            (reconnects,) = counted(before, "reconnects")
            assert reconnects >= 1  # one, unless a PING on the new connection was slow to come back too
            assert "not even the answer to a PING" in caplog.text
            await publisher.aclose()
        finally:
            await bus.stop()
            await store.close()


async def test_a_quiet_but_live_connection_is_kept(services: Services) -> None:
    # given a bus on a healthy connection of a Redis of its own, where nobody publishes (no relay runs)
    async with redis_server() as redis:
        store = RedisStore(redis.url, services.redis.prefix, services.settings.data_dir)
        bus = LiveBus(store, services.db, silence_s=0.2, ping_timeout_s=10)
        bus.sequence.anchor(0)
        before = bus_events()
        await bus.start(lambda topics: None)
        observer = Redis.from_url(redis.url)

        async def pings() -> int:
            stats = await observer.info("commandstats")
            return int(stats.get("cmdstat_ping", {}).get("calls", 0))

        try:
            # when it stays silent long enough to check its connection three times
            await until(lambda: _at_least(pings(), 3), "three PINGs on the quiet connection")
        finally:
            await bus.stop()
            await observer.aclose()
            await store.close()
    # then each PING was answered, and the connection was never replaced
    assert counted(before, "reconnects") == (0,)


async def _at_least(count: Awaitable[int], floor: int) -> bool:
    return await count >= floor
