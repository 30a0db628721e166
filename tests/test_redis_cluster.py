"""Redis on a cluster: keys that work together share a slot, leases fence across shards, and a master
failover during ingest loses no acknowledged event (the database is the truth; boards are repaired).

The fencing and slot tests run on every backend; the failover drills need the Redis Cluster that
`make test-scale` starts (LOYALTY_TEST_REDIS=cluster) and skip elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis.exceptions
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.runtime import Services
from domain.auth.throttle import Throttle
from domain.live.bus import LiveBus
from domain.live.messages import Relayed, encode
from domain.live.relay import changes_channel
from domain.models import Event, StandingsFeed
from domain.redis_store import Lease, RedisStore, slot_tag
from domain.settings import ConfigurationError
from gamification.leaderboards.feeder import Mark, StandingsFeeder
from gamification.leaderboards.rebuild import rebuild, reconcile
from gamification.leaderboards.store import (
    BoardKey,
    Update,
    apply_updates,
    board_pattern,
    board_tag,
    feeder_lease,
)
from gamification.periods import PeriodKind
from tests.support import ShiftableClock
from tests.support.backends import Backends
from tests.support.events import RECORD, event, join, record_accepted
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.leaderboards import feed
from tests.support.live import change
from tests.support.outage import until

if TYPE_CHECKING:
    from tests.support.redis_cluster import RedisClusterProcesses


def slot(key: str) -> int:
    return key_slot(key.encode())


@given(st.text(alphabet="ab{}:", max_size=12))
def test_slot_tag_is_what_redis_cluster_hashes(key: str) -> None:
    assert slot(slot_tag(key)) == slot(key)


def test_keys_used_together_share_a_slot() -> None:
    store = RedisStore("redis+cluster://127.0.0.1:1", "p:", None)
    lease = Lease(store, "leaderboard-feeder", 10)
    assert slot(lease.epoch_key) == slot(lease.key)  # one Lua script holds the lease and counts epochs
    board = BoardKey(7, "visits", "org:3", PeriodKind.WEEKLY, datetime(2026, 1, 5, tzinfo=UTC)).name(store)
    tag = board_tag(7, "visits")
    assert slot(board) == slot(lease.fence_key(tag)) == slot(f"{board}:rebuild")  # fenced MULTI, RENAME
    throttle = Throttle(store, ShiftableClock(), "login")
    assert slot(throttle.key("ana@example.com")) == slot(throttle.key("ip:10.0.0.1"))  # one Lua script
    assert slot(store.channel("live", "wake")) == slot(changes_channel(store))  # one subscription


def test_the_cluster_url_names_its_nodes_and_a_malformed_one_is_refused() -> None:
    store = RedisStore("rediss+cluster://app:s3cr%40t@10.0.0.1:7000,10.0.0.2:7001/", "p:", None)
    assert store.cluster_address is not None
    assert store.cluster_address.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (store.cluster_address.username, store.cluster_address.password) == ("app", "s3cr@t")
    assert store.cluster_address.tls
    assert not RedisStore("redis://10.0.0.1:6379/0", "p:", None).is_cluster
    with pytest.raises(ConfigurationError, match=r"'10\.0\.0\.2' is not host:port"):
        RedisStore("redis+cluster://10.0.0.1:7000,10.0.0.2", "p:", None)


async def test_a_pass_whose_lease_was_taken_over_cannot_overwrite_the_new_holder(services: Services) -> None:
    # given the feeder holding its lease, and a board key
    name = f"fence-test-{id(services)}-{asyncio.get_running_loop().time()}"
    stale, fresh = Lease(services.redis, name, 10), Lease(services.redis, name, 10)
    assert await stale.hold()
    key = BoardKey(999_001, "points", "program", PeriodKind.ALL_TIME, None).name(services.redis)
    tag = board_tag(999_001, "points")
    assert await apply_updates(services.redis.client, {key: Update({1: 10}, [], None)}, stale)

    # when another holder takes the lease over and writes the board
    await fresh.take_over()
    assert fresh.epoch is not None
    assert stale.epoch is not None
    assert fresh.epoch > stale.epoch
    assert await apply_updates(services.redis.client, {key: Update({1: 20}, [], None)}, fresh)

    # then the stale holder's next write is refused and changes nothing, on its board's shard
    assert not await apply_updates(services.redis.client, {key: Update({1: 99, 2: 5}, [], None)}, stale)
    assert await services.redis.client.zrange(key, 0, -1, withscores=True) == [("1", 20.0)]
    # and a holder that only claimed a board (a rebuild before its RENAME) fences it the same way
    newest = Lease(services.redis, name, 10)
    await newest.take_over()
    assert await newest.claim(tag)
    assert not await apply_updates(services.redis.client, {key: Update({1: 21}, [], None)}, fresh)
    await services.redis.client.delete(key, stale.fence_key(tag), stale.key, stale.epoch_key)


async def test_a_feeder_pass_overtaken_by_a_rebuild_writes_nothing_and_keeps_its_rows(
    services: Services,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a purchase waiting in the standings feed, and the feeder holding its lease
    await join(integration, "ana")
    await record_accepted(integration, [event("ana", "purchase", clock.now() - timedelta(minutes=1), "10")])
    feeder = next(loop for loop in services.loops if isinstance(loop, StandingsFeeder))
    await feeder.lease.take_over()
    rebuild_lease = feeder_lease(services.redis)
    compute = feeder.updates

    async def overtaken(session: AsyncSession, program_id: int, marks: Sequence[Mark]) -> dict[str, Update]:
        updates = await compute(session, program_id, marks)
        # a rebuild takes the lease over and claims the board while the pass computes
        await rebuild_lease.take_over()
        assert await rebuild_lease.claim(board_tag(program_id, "points"))
        return updates

    # when the pass goes on to write
    monkeypatch.setattr(feeder, "updates", overtaken)
    assert not await feeder.run_once()
    monkeypatch.undo()

    # then the board was not written and the rows wait in the feed
    pattern = board_pattern(services.redis, program.id, "points")
    assert [k async for k in services.redis.client.scan_iter(match=pattern)] == []
    async with services.db.read() as session:
        waiting = await session.scalar(
            select(func.count()).select_from(StandingsFeed).where(StandingsFeed.program_id == program.id)
        )
    assert waiting
    # and once the rebuild is done the feeder writes them
    await rebuild_lease.release()
    await feed(services)
    assert [k async for k in services.redis.client.scan_iter(match=pattern)] != []


# ---------- drills on a real cluster ----------


@pytest.fixture
def cluster(backends: Backends, request: pytest.FixtureRequest) -> RedisClusterProcesses:
    if not backends.redis_cluster:
        pytest.skip("needs the app on a Redis Cluster: make test-scale (LOYALTY_TEST_REDIS=cluster)")
    found: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
    return found


async def ingest(integration: GraphQLClient, batches: list[list[dict[str, Any]]]) -> tuple[set[str], int]:
    """Record the batches as a POS would: the externalIds acknowledged ACCEPTED, and how many
    requests failed (a retryable error while the cluster failed over; those events were not acknowledged)."""
    acknowledged: set[str] = set()
    failed = 0
    for batch in batches:
        try:
            response = await integration.http.post(
                "/graphql",
                json={"query": RECORD, "variables": {"e": batch}},
                headers={"Authorization": f"Bearer {integration.token}"},
            )
        except redis.exceptions.RedisError:
            failed += 1
            continue
        data = response.json()
        if response.status_code != 200 or data.get("errors"):
            failed += 1
            continue
        acknowledged |= {
            r["externalId"] for r in data["data"]["recordEvents"]["results"] if r["status"] == "ACCEPTED"
        }
    return acknowledged, failed


async def test_a_master_failover_during_ingest_loses_no_acknowledged_event_and_boards_are_repaired(
    cluster: RedisClusterProcesses,
    services: Services,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
) -> None:
    names = [f"fo{i}" for i in range(20)]
    await join(integration, *names)
    now = clock.now() - timedelta(minutes=5)
    batches = [
        [event(names[(b * 5 + i) % 20], "purchase", now, str(1 + (b + i) % 9)) for i in range(5)]
        for b in range(40)
    ]
    board_shard = "{" + board_tag(program.id, "points") + "}"

    # when the master serving the program's points board dies while events are recorded and fed
    async def drill() -> None:
        await asyncio.sleep(0)  # let ingest start first
        dead = await asyncio.to_thread(cluster.kill_master, board_shard)
        await asyncio.to_thread(cluster.revive, dead)

    async def feed_along() -> None:
        for _ in range(40):
            # a failed pass leaves the feed rows: they are fed once the shard is served again
            with contextlib.suppress(redis.exceptions.RedisError):
                await feed(services)
            await asyncio.sleep(0.05)

    (acknowledged, _), _, _ = await asyncio.gather(ingest(integration, batches), drill(), feed_along())

    # then every acknowledged event is in the database (the truth), and the rest go in on retry
    async with services.db.read() as session:
        stored = set(
            (await session.scalars(select(Event.external_id).where(Event.program_id == program.id))).all()
        )
    assert acknowledged <= stored
    retried, failed = await ingest(
        integration, [[e for e in b if e["externalId"] not in stored] for b in batches]
    )
    assert failed == 0
    assert acknowledged | retried | stored == {e["externalId"] for b in batches for e in b}

    # and the boards, fed on and reconciled, match the ledger exactly (whatever the dead master lost)
    await feed(services)
    async with services.db.read() as session:
        await reconcile(session, services.redis, clock.now(), program_ids=[program.id])
        assert (await reconcile(session, services.redis, clock.now(), program_ids=[program.id])).drift == 0
        count = await session.scalar(
            select(func.count()).select_from(Event).where(Event.program_id == program.id)
        )
    assert count == len(names) * 10
    # and a rebuild from the ledger writes the same boards
    await rebuild(services.db, services.redis, clock.now(), program_ids=[program.id])
    async with services.db.read() as session:
        assert (await reconcile(session, services.redis, clock.now(), program_ids=[program.id])).drift == 0
    await feeder_lease(services.redis).release()


async def test_the_live_bus_follows_its_shard_through_a_failover(
    cluster: RedisClusterProcesses, services: Services
) -> None:
    # given a listening bus and a subscriber
    bus = LiveBus(services.redis, services.db)
    bus.sequence.anchor(10)
    woken: list[list[str]] = []
    await bus.start(lambda topics: woken.append(sorted(topics)))
    try:
        await until(lambda: woken == [["*"]], "the bus subscribed")
        with bus.subscribe(1, None) as subscriber:
            # when the master of the live channels' shard hands its slots to its replica
            await asyncio.to_thread(cluster.failover, changes_channel(services.redis))

            # then the bus subscribes again on the new master (it wakes its loops, as after any
            # reconnect) and hands out what is published there
            await until(lambda: len(woken) == 2, "the bus subscribed again after the failover")
            await services.redis.publish(
                changes_channel(services.redis), encode(Relayed(10, 11, [change(11)]))
            )
            assert await asyncio.wait_for(subscriber.next(None), 10) == change(11)
    finally:
        await bus.stop()


async def test_a_fresh_process_that_subscribes_first_hears_what_is_published(
    cluster: RedisClusterProcesses, services: Services
) -> None:
    # given a process whose first use of the cluster is the live bus's subscription
    fresh = RedisStore(cluster.url, services.redis.prefix, None)
    try:
        async with fresh.listen(changes_channel(fresh)) as listener:
            # when it publishes on the channel (SPUBLISH, routed to the channel's shard)
            assert await fresh.publish(changes_channel(fresh), b"hello") == 1
            # then it hears the message as a plain one
            message = await listener.get_message(5)
    finally:
        await fresh.close()
    assert message is not None
    assert (message["type"], message["channel"], message["data"]) == (
        "message",
        changes_channel(fresh),
        "hello",
    )
