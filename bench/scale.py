"""Scale benchmark: the same work on the deployment beyond one machine and on one machine, side by side.

Each comparison is one function (`COMPARISONS`) that runs both sides in this one run and reports
both with their ratio; `--only NAME` runs one. Progress goes to stderr; the last line on stdout is
one JSON object with the figures.

* boards: Redis Cluster (3 masters, no replicas) vs one redis-server, both started by the bench from
  Debian's binaries on loopback ports with the same settings (tests/support/redis_cluster.py, the
  launcher the scale tests use), reached through the app's own `RedisStore` (`redis+cluster://` vs
  `redis://`) and its board functions (gamification/leaderboards/store.py):
  - writes: B boards of M members filled as the feeder writes them (`apply_updates`, 2,000 members
    per call, one MULTI/EXEC per board), then every member's score updated once more; members/s;
  - reads: C concurrent readers, each read one board's `top(first: 100)`, `around(member, 5)` and
    `entry(member)` (the leaderboard query's Redis calls), for a fixed time; reads/s and p50/p99;
  - memory: `MEMORY USAGE key SAMPLES 0` of each board on the single server: bytes per board member.
* relay: the relay's Redis side on both: relay messages of 200 changes published one after another
  (PUBLISH, or SPUBLISH on the cluster) to one listening bus connection; changes/s delivered.

  This machine has 2 cores shared by every process: the cluster's ratio here is its cost per
  operation (routing, more connections), not the throughput 3 machines give.
* analytics: a PostgreSQL primary and its streaming replica of the bench's own
  (tests/support/pg_replica.py: initdb, `pg_basebackup -R`, loopback ports) get the analytics
  bench's program (members, events, aggregates, the `buyers` and `vip` segments with their change
  log and memberships). The same analytics read load (segment reports over 30 days and overlaps,
  two in flight) runs twice through the real service (`SegmentAnalytics`): without
  LOYALTY_DATABASE_REPLICA_URL (every read on the primary), then with it (the reads that may lag on
  the replica). Each side: CPU seconds of the primary's and the replica's PostgreSQL process trees,
  wall time, reports per second.

* partition_ingest, event_prune: plain vs partitioned history tables on two fresh databases of
  one PostgreSQL server (bench/partitions.py says how): events/s through the pipeline, and the
  time to let the oldest month of events go (DELETE + VACUUM vs DETACH + DROP of its partition).

Usage: .venv/bin/python bench/scale.py [--quick] [--boards B] [--members M] [--duration S]
       [--analytics-members N] [--analytics-events N] [--reports N] [--database-url URL]
       [--partition-members N] [--partition-events N] [--partition-ingest N] [--partition-rounds N]
       [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench`, `tests` when run as a script

import migrations
from bench.analytics import CHANGES_SQL, LEFT_SQL, MEMBERSHIPS_SQL, SEGMENTS_SQL
from bench.harness import DEFAULT_DATABASE_URL, PhaseResult, log, run_concurrently, tree_cpu_s
from bench.partitions import compare_event_prune, compare_partition_ingest
from bench.segments import generate
from domain.analytics.segments import SegmentAnalytics
from domain.clock import SystemClock
from domain.db.engine import Database, create_engine, session_factory
from domain.db.replica import Replica
from domain.live.messages import LiveChange, Relayed
from domain.live.messages import encode as encode_relayed
from domain.live.relay import PER_MESSAGE, changes_channel
from domain.redis_store import RedisStore
from gamification.leaderboards import store
from gamification.leaderboards.scores import encode
from gamification.leaderboards.store import BoardKey, Update
from gamification.periods import PeriodKind
from tests.support.pg_replica import PgPair, missing
from tests.support.redis_cluster import running_redis_cluster, running_redis_server

#: Members per `apply_updates` call: the feeder's batch.
FEEDER_BATCH = 2000
PREFIX = "bench-scale:"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--boards", type=int, help="boards (one program each; default 24, quick 8)")
    parser.add_argument("--members", type=int, help="members per board (default 50,000, quick 8,000)")
    parser.add_argument("--duration", type=float, help="seconds of reads per side (default 15, quick 4)")
    parser.add_argument("--concurrency", type=int, default=8, help="readers in flight")
    parser.add_argument(
        "--analytics-members", type=int, help="analytics: members (default 200,000, quick 5,000)"
    )
    parser.add_argument(
        "--analytics-events", type=int, help="analytics: events (default 1,000,000, quick 25,000)"
    )
    parser.add_argument("--reports", type=int, help="analytics: reads per side (default 200, quick 20)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LOYALTY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="partitions: the PostgreSQL server to create the two fresh databases on",
    )
    parser.add_argument(
        "--partition-members", type=int, help="partitions: members (default 50,000, quick 5,000)"
    )
    parser.add_argument(
        "--partition-events",
        type=int,
        help="partitions: events loaded first (default 2,000,000, quick 20,000)",
    )
    parser.add_argument(
        "--partition-ingest",
        type=int,
        help="partitions: events per ingest round (default 10,000, quick 1,500)",
    )
    parser.add_argument(
        "--partition-rounds", type=int, help="partitions: ingest rounds per side (4, quick 2)"
    )
    parser.add_argument("--only", choices=sorted(COMPARISONS), help="run one comparison")
    options = parser.parse_args(argv)
    options.boards = options.boards or (8 if options.quick else 24)
    options.members = options.members or (8_000 if options.quick else 50_000)
    options.duration = options.duration or (4.0 if options.quick else 15.0)
    options.analytics_members = options.analytics_members or (5_000 if options.quick else 200_000)
    options.analytics_events = options.analytics_events or (25_000 if options.quick else 1_000_000)
    options.reports = options.reports or (20 if options.quick else 200)
    options.partition_members = options.partition_members or (3_000 if options.quick else 50_000)
    options.partition_events = options.partition_events or (20_000 if options.quick else 2_000_000)
    options.partition_ingest = options.partition_ingest or (1_500 if options.quick else 10_000)
    options.partition_rounds = options.partition_rounds or (2 if options.quick else 4)
    return options


# ------------------------------------------------------------------------------------------ boards


def board_keys(redis: RedisStore, boards: int) -> list[str]:
    """One ALL_TIME points board per program 1..B: B hash tags, spread over the cluster's slots."""
    return [
        BoardKey(p, "points", "program", PeriodKind.ALL_TIME, None).name(redis) for p in range(1, boards + 1)
    ]


async def write_boards(
    redis: RedisStore, keys: list[str], members: int, rng: random.Random
) -> dict[str, Any]:
    """Fill every board as the feeder does, then update every member's score once: members/s (the
    updates are built before the clock starts: only the Redis side is timed)."""
    since = datetime(2026, 1, 1, tzinfo=UTC)
    figures: dict[str, Any] = {}
    for phase in ("fill", "update"):
        calls = [
            {
                key: Update(
                    {m: encode(rng.randrange(1, 100_000), since + timedelta(seconds=m), None) for m in batch},
                    (),
                    None,
                )
                for key in keys
            }
            for batch in (
                range(first, min(members, first + FEEDER_BATCH)) for first in range(0, members, FEEDER_BATCH)
            )
        ]
        started = time.perf_counter()
        for updates in calls:
            await store.apply_updates(redis.client, updates)
        seconds = time.perf_counter() - started
        written = members * len(keys)
        figures[phase] = {
            "members": written,
            "seconds": round(seconds, 2),
            "members_per_s": round(written / seconds),
        }
        log(f"  {phase}: {written:,} members in {seconds:.1f}s = {written / seconds:,.0f}/s")
    return figures


async def read_boards(
    redis: RedisStore, keys: list[str], members: int, concurrency: int, duration: float
) -> dict[str, Any]:
    """C readers, each read one board's top 100, the 11 around a member and the member's entry."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def reader(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            key, member = rng.choice(keys), rng.randrange(members)
            started = time.perf_counter()
            await store.top(redis.client, key, 100, 0)
            await store.around(redis.client, key, member, 5)
            await store.entry(redis.client, key, member)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(reader(i) for i in range(concurrency)))
    result = PhaseResult(len(latencies), time.perf_counter() - started, latencies)
    log(
        f"  reads: {result.per_s:,.0f}/s, "
        f"p50 {result.percentile(50):.2f} ms, p99 {result.percentile(99):.2f} ms"
    )
    return {
        "reads": result.events,
        "reads_per_s": round(result.per_s),
        "p50_ms": round(result.percentile(50), 2),
        "p99_ms": round(result.percentile(99), 2),
    }


async def board_memory(redis: RedisStore, keys: list[str]) -> dict[str, Any]:
    """MEMORY USAGE of each board (every element counted) per member."""
    usage = [int(await redis.client.memory_usage(key, samples=0) or 0) for key in keys]
    size = sum([int(await redis.client.zcard(key)) for key in keys])
    encodings = {str(await redis.client.object("encoding", key)) for key in keys}
    return {
        "members": size,
        "bytes": sum(usage),
        "bytes_per_member": round(sum(usage) / size, 1),
        "encoding": sorted(encodings),
    }


async def board_side(url: str, options: argparse.Namespace, with_memory: bool) -> dict[str, Any]:
    redis = RedisStore(url, PREFIX, None)
    try:
        keys = board_keys(redis, options.boards)
        figures: dict[str, Any] = {
            "writes": await write_boards(redis, keys, options.members, random.Random(7))
        }
        figures |= await read_boards(redis, keys, options.members, options.concurrency, options.duration)
        if with_memory:
            figures["memory"] = await board_memory(redis, keys)
        for key in keys:
            assert int(await redis.client.zcard(key)) == options.members, key
        return figures
    finally:
        await redis.close()


async def compare_boards(options: argparse.Namespace) -> dict[str, Any]:
    """Board writes and reads on a Redis Cluster vs one Redis (and bytes per board member)."""
    with running_redis_server() as single:
        log(f"boards on one redis-server ({options.boards} boards x {options.members:,} members)")
        one = await board_side(f"redis://127.0.0.1:{single.port}/0", options, with_memory=True)
    with running_redis_cluster(replicas=0) as cluster:
        log(f"boards on a Redis Cluster of 3 masters ({cluster.url})")
        many = await board_side(cluster.url, options, with_memory=False)
    return {
        "boards": options.boards,
        "members_per_board": options.members,
        "concurrency": options.concurrency,
        "single": one,
        "cluster": many,
        "cluster_vs_single": {
            "fill_members_per_s": ratio(
                many["writes"]["fill"]["members_per_s"], one["writes"]["fill"]["members_per_s"]
            ),
            "update_members_per_s": ratio(
                many["writes"]["update"]["members_per_s"], one["writes"]["update"]["members_per_s"]
            ),
            "reads_per_s": ratio(many["reads_per_s"], one["reads_per_s"]),
            "read_p99_ms": ratio(many["p99_ms"], one["p99_ms"]),
        },
        "bytes_per_board_member": one["memory"]["bytes_per_member"],
    }


# ------------------------------------------------------------------------------------------ relay


async def relay_side(url: str, messages: int) -> dict[str, Any]:
    """`messages` relay messages (PER_MESSAGE changes each) published one after another, as the relay
    does, to one listening bus connection (PUBLISH / SSUBSCRIBE on the shard of the channels)."""
    redis = RedisStore(url, PREFIX, None)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = [
        encode_relayed(
            Relayed(
                n * PER_MESSAGE,
                (n + 1) * PER_MESSAGE,
                [
                    LiveChange(n * PER_MESSAGE + i + 1, 1, "vip", f"m{i}", "ENTERED", at)
                    for i in range(PER_MESSAGE)
                ],
            )
        )
        for n in range(messages)
    ]
    channel = changes_channel(redis)
    try:
        async with redis.listen(channel) as listener:

            async def hear() -> None:
                heard = 0
                while heard < messages:
                    if await listener.get_message(10) is None:
                        raise RuntimeError(f"heard {heard} of {messages} relay messages")
                    heard += 1

            hearing = asyncio.create_task(hear())
            started = time.perf_counter()
            for body in bodies:
                await redis.publish(channel, body)
            await hearing
            seconds = time.perf_counter() - started
    finally:
        await redis.close()
    changes = messages * PER_MESSAGE
    log(f"  relay: {changes:,} changes in {seconds:.2f}s = {changes / seconds:,.0f}/s")
    return {
        "messages": messages,
        "changes": changes,
        "seconds": round(seconds, 3),
        "changes_per_s": round(changes / seconds),
    }


async def compare_relay(options: argparse.Namespace) -> dict[str, Any]:
    """The relay's Redis side: relayed changes per second to a listening process, cluster vs one."""
    messages = 500 if options.quick else 2000
    with running_redis_server() as single:
        log("relay messages on one redis-server (PUBLISH/SUBSCRIBE)")
        one = await relay_side(f"redis://127.0.0.1:{single.port}/0", messages)
    with running_redis_cluster(replicas=0) as cluster:
        log("relay messages on a Redis Cluster (SPUBLISH/SSUBSCRIBE)")
        many = await relay_side(cluster.url, messages)
    return {
        "single": one,
        "cluster": many,
        "cluster_vs_single": {"changes_per_s": ratio(many["changes_per_s"], one["changes_per_s"])},
    }


# --------------------------------------------------------------------------------------- analytics

#: Analytics reads in flight (each runs PARTS queries side by side).
ANALYTICS_CONCURRENCY = 2
#: The reads a segment report runs side by side (SegmentAnalytics.report), and one before them.
PARTS = 6


async def compare_analytics(options: argparse.Namespace) -> dict[str, Any]:
    """Primary CPU under one analytics read load, with every read on the primary, then with the
    replica taking the reads that may lag."""
    members, events = options.analytics_members, options.analytics_events
    reports, concurrency = options.reports, ANALYTICS_CONCURRENCY
    reason = missing()
    if reason:
        raise SystemExit(f"analytics on the replica: {reason}")
    started = time.perf_counter()
    pair = await asyncio.to_thread(PgPair.start)
    try:
        await asyncio.to_thread(migrations.upgrade, pair.primary_url)
        now = datetime.now(UTC).replace(microsecond=0)
        program_id = await _load(pair, members, events, now)
        await asyncio.to_thread(pair.wait_replayed)
        figures: dict[str, Any] = {"members": members, "events": events, "reports": reports}
        figures["setup_s"] = round(time.perf_counter() - started, 1)
        log(f"pair started and loaded in {figures['setup_s']} s")
        for name, with_replica in (("primary_only", False), ("with_replica", True)):
            figures[name] = await _phase(pair, program_id, now, reports, concurrency, with_replica)
            log(f"{name}: {figures[name]}")
        alone, moved = figures["primary_only"], figures["with_replica"]
        figures["primary_cpu_saved_share"] = round(
            1 - moved["primary_cpu_s"] / alone["primary_cpu_s"] if alone["primary_cpu_s"] else 0.0, 2
        )
        return figures
    finally:
        await asyncio.to_thread(pair.stop)


async def _load(pair: PgPair, members: int, events: int, now: datetime) -> int:
    """The analytics bench's program on the primary; its id."""
    connection = await asyncpg.connect(pair.primary_url.replace("+asyncpg", ""))
    try:
        program_id, _ = await generate(connection, members, events, now, ledger=False)
        await connection.execute(SEGMENTS_SQL, program_id, now)
        ids = dict(await connection.fetch("SELECT key, id FROM segments WHERE program_id = $1", program_id))
        await connection.execute("SET session_replication_role = replica")
        for key, every in (("buyers", 2), ("vip", 3)):
            await connection.execute(CHANGES_SQL, program_id, ids[key], now, every)
            await connection.execute(LEFT_SQL, program_id, ids[key], now)
            await connection.execute(MEMBERSHIPS_SQL, ids[key])
        await connection.execute("SET session_replication_role = DEFAULT")
        await connection.execute("ANALYZE")
        return program_id
    finally:
        await connection.close()


async def _phase(
    pair: PgPair, program_id: int, now: datetime, reports: int, concurrency: int, with_replica: bool
) -> dict[str, float]:
    # a report runs its parts side by side: pools large enough that no backend (and the CPU it
    # used) comes and goes during the phase
    pool_size = PARTS * concurrency
    replica = None
    if with_replica:
        engine = create_engine(pair.replica_url, pool_size=pool_size, connect_timeout_s=2)
        replica = Replica(engine, session_factory(engine), SystemClock(), timedelta(seconds=10))
    db = Database(create_engine(pair.primary_url, pool_size=pool_size), replica=replica)
    service = SegmentAnalytics(db, SystemClock())
    start = (now - timedelta(days=29)).date()

    async def one(number: int) -> float:
        began = time.perf_counter()
        if number % 2:
            await service.overlap(program_id, "buyers", "vip")
        else:
            await service.report(program_id, "buyers", start, now.date())
        return (time.perf_counter() - began) * 1000

    try:
        await asyncio.gather(*(one(n) for n in range(2 * concurrency)))  # fill the pools, warm caches
        primary, standby = _postmaster(pair.primary), _postmaster(pair.replica)
        cpu = tree_cpu_s(primary), tree_cpu_s(standby)
        seconds, _ = await run_concurrently(reports, concurrency, one, "analytics")
        return {
            "primary_cpu_s": round(tree_cpu_s(primary) - cpu[0], 2),
            "replica_cpu_s": round(tree_cpu_s(standby) - cpu[1], 2),
            "seconds": round(seconds, 2),
            "reports_per_s": round(reports / seconds, 1),
        }
    finally:
        await db.dispose()


def _postmaster(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


# ------------------------------------------------------------------------------------------ main

Comparison = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]
COMPARISONS: dict[str, Comparison] = {
    "boards": compare_boards,
    "relay": compare_relay,
    "analytics": compare_analytics,
    "partition_ingest": compare_partition_ingest,
    "event_prune": compare_event_prune,
}


async def run(options: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    figures: dict[str, Any] = {"quick": options.quick}
    for name, comparison in COMPARISONS.items():
        if options.only in (None, name):
            figures[name] = await comparison(options)
    figures["elapsed_s"] = round(time.perf_counter() - began, 1)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    figures = asyncio.run(run(options))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
