"""Leaderboards benchmark: board memory, the update path and the GraphQL read path, each next to a baseline.

One fresh PostgreSQL database (migrated with `migrations.upgrade`, dropped at the end) and the local
Redis under a fresh key prefix (cleared at the end). N members (1,000,000; --quick 100,000) are
written straight into the database (one `INSERT ... SELECT generate_series`), and the program's
built-in `points` board (ALL_TIME) is filled with all of them.

* memory: the board is filled exactly as the feeder writes it: element = member id as text, score =
  `scores.encode(points, reached_at, None)`, through `store.apply_updates` (2,000 members per
  MULTI/EXEC, the feeder's batch). `MEMORY USAGE key SAMPLES 0` and the INFO `used_memory` delta give
  bytes per member. Baseline: the same members in a plain ZSET whose scores are the points (no
  packing). Also a 100-member board both ways (small boards are listpacks), and, on a private
  `redis-server` started by the bench (so the shared server's configuration is not touched), the
  same 1M board RESTOREd under `zset-max-listpack-entries` 128 (skiplist) and N + 1 (listpack), with
  the cost of one ZADD and one ZREVRANK on each.
* update path: `apply_updates` alone (existing members get new scores; one key, and the four keys
  of the `points` board's periods as the feeder writes them), the whole feeder pass (purchases
  recorded through the real pipeline, `EventService.record_events` in process, then
  `StandingsFeeder.run_once` timed until the feed is drained: the database recompute and the Redis
  write), next to `redis-benchmark -P 16 -r 1000000` ZADD and ZINCRBY on the same Redis.
* read path: `leaderboard(key: "points") { top(first: 100) { ... } around(memberExternalId: $m,
  radius: 5) { ... } }` through real `loyalty serve` processes, next to a plain Starlette endpoint
  (`plain_app` below, served by uvicorn the same way) that makes the same Redis calls (ZREVRANGE
  0 99 WITHSCORES, ZREVRANK + ZREVRANGE around, scores decoded), looks up the member's id and the
  ranked members' externalIds in SQL, and answers the same JSON (checked on a few members first).
  W (2) single-worker processes per endpoint, the clients spread over them in turn (uvicorn's
  `--workers` shares one socket, and a burst of keep-alive connections lands on one worker;
  `--shared-socket` runs that layout instead). The same httpx load drives both: C concurrent
  clients (8, then 32; --quick 32), fixed duration, alternating rounds; req/s, p50/p99, CPU per
  request of each side, and the PostgreSQL connections each server opened.

Progress goes to stderr; the last line on stdout is one JSON object with the figures.
Usage: .venv/bin/python bench/leaderboards.py [--quick] [--members N] [--duration S] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import uvloop
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` when run as a script

from bench.harness import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    DEFAULT_WORKERS,
    REPO,
    PgServer,
    Server,
    _children,
    _machine_busy_s,
    _pids_with,
    _proc_cpu_s,
    clear_redis,
    free_port,
    log,
    start_server,
    wait_healthy,
)
from gamification.leaderboards.scores import MAX_POINTS, decode, encode

BOARD = "points"
FEEDER_BATCH = 2000  # StandingsFeeder's default batch
RECORD_BATCH = 500
GOAL_BYTES_PER_MEMBER = 100.0
GOAL_READ_RATIO = 3.0
SMALL_BOARD = 100
#: First member id: elements are 7-digit ids. Redis stores an element of up to 6 characters in an
#: 8-byte allocation and one of 7 to 14 in a 16-byte one, so ids below 1,000,000 would look 8 bytes
#: per member cheaper than a deployment with more than a million members.
FIRST_ID = 1_000_000
TOP = 100
RADIUS = 5
QUERY = (
    'query($m: String!) { leaderboard(key: "points") { '
    "top(first: 100) { rank score member { externalId } } "
    "around(memberExternalId: $m, radius: 5) { rank score member { externalId } } } }"
)

MEMBERS_SQL = """
INSERT INTO members (program_id, external_id, kind, organization_id, attributes, channels, joined_at,
                     created_at, updated_at, points_balance, pending_points)
SELECT $1, $2 || lpad(g::text, 7, '0'), 'CUSTOMER', NULL,
       jsonb_build_object('city', (ARRAY['Istanbul', 'Ankara', 'Izmir', 'Bursa'])[1 + g % 4]),
       '["EMAIL"]'::jsonb, $3::timestamptz - make_interval(days => 1 + g % 400), $3, $3, 0, 0
FROM generate_series(0, $4 - 1) AS g
ORDER BY g
"""


# ------------------------------------------------------------------------------------------ figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as bench/ingest.py)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else math.inf


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


async def machine_busy(seconds: float = 2.0) -> float:
    """Busy cores of the whole machine over a short look, before the bench starts (other work)."""
    before = _machine_busy_s()
    await asyncio.sleep(seconds)
    return (_machine_busy_s() - before) / seconds


def _reaped_cpu_s(pid: int) -> float:
    """cutime + cstime: the CPU of the children a process has reaped (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Cpu:
    """CPU seconds over a phase: this client, a server's process tree, the bench database's PostgreSQL
    backends, the Redis server, and the rest of the machine.

    PostgreSQL backends that exit during the phase (a connection pool closing overflow connections)
    are counted through the postmaster's reaped-children CPU."""

    def __init__(self, database: str, redis_pid: int | None, servers: Sequence[int] = ()) -> None:
        self.database = database
        self.redis_pid = redis_pid
        self.server_pids = [p for pid in servers for p in (pid, *_children(pid))]
        self.client = time.process_time()
        self.server = sum(_proc_cpu_s(p) for p in self.server_pids)
        self.backends = {pid: _proc_cpu_s(pid) for pid in _pids_with(f" {database} ")}
        self.postmaster = next((_parent(pid) for pid in self.backends), None)
        self.reaped = _reaped_cpu_s(self.postmaster) if self.postmaster else 0.0
        self.redis = _proc_cpu_s(redis_pid) if redis_pid else 0.0
        self.machine = _machine_busy_s()

    def stop(self) -> dict[str, float]:
        client = time.process_time() - self.client
        server = sum(_proc_cpu_s(p) for p in self.server_pids) - self.server
        pids = set(self.backends) | set(_pids_with(f" {self.database} "))
        postgres = sum(_proc_cpu_s(pid) - self.backends.get(pid, 0.0) for pid in pids)
        if self.postmaster:  # backends gone since the start: their whole CPU, less what they had then
            postgres += _reaped_cpu_s(self.postmaster) - self.reaped
        redis = (_proc_cpu_s(self.redis_pid) - self.redis) if self.redis_pid else 0.0
        machine = _machine_busy_s() - self.machine
        figures = {
            "client_cpu_s": client,
            "server_cpu_s": server,
            "postgres_cpu_s": postgres,
            "redis_cpu_s": redis,
            "other_cpu_s": machine - client - server - postgres - redis,
            "machine_busy_cpu_s": machine,
        }
        return {name: round(value, 3) for name, value in figures.items()}


# ------------------------------------------------------------------------------------------ set-up


@dataclass
class Options:
    quick: bool
    members: int
    updates: int
    feed_members: int
    feed_history: int
    bench_requests: int
    duration_s: float
    warmup_s: float
    rounds: int
    concurrency: tuple[int, ...]
    workers: int
    shared_socket: bool
    latency_samples: int
    database_url: str
    redis_url: str
    skip_listpack: bool
    skip_feeder: bool
    skip_read: bool


@dataclass
class Board:
    program_id: int
    ids: list[int]  # member ids; index i is external id `<prefix><i:07d>`
    external_prefix: str

    def external_id(self, index: int) -> str:
        return f"{self.external_prefix}{index:07d}"


async def seed_members(pg: PgServer, database: str, program_id: int, prefix: str, count: int) -> Board:
    connection = await pg.connect(database)
    try:
        now = datetime.now(UTC)
        await connection.execute(MEMBERS_SQL, program_id, prefix, now, count)
        first = cast(
            int, await connection.fetchval("SELECT min(id) FROM members WHERE program_id = $1", program_id)
        )
        misplaced = await connection.fetchval(
            "SELECT count(*) FROM members WHERE program_id = $1 "
            "AND external_id <> $2 || lpad((id - $3)::text, 7, '0')",
            program_id,
            prefix,
            first,
        )
        if misplaced:
            raise RuntimeError(f"seeded member ids are not consecutive ({misplaced} misplaced)")
    finally:
        await connection.close()
    return Board(program_id, list(range(first, first + count)), prefix)


async def analyze(pg: PgServer, database: str, table: str = "") -> None:
    """autovacuum is off on this machine: give the planner the statistics it would have."""
    connection = await pg.connect(database)
    try:
        await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()


def board_scores(count: int, now: datetime, seed: int = 5) -> tuple[list[int], list[datetime]]:
    """Points (log-normal, median about 400) and when each member reached them (the last 2 years)."""
    rng = random.Random(seed)
    points = [min(int(rng.lognormvariate(6.0, 1.3)), MAX_POINTS) for _ in range(count)]
    reached = [now - timedelta(seconds=rng.uniform(60, 2 * 365 * 86400)) for _ in range(count)]
    return points, reached


def chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


# ------------------------------------------------------------------------------------------ memory


async def used_memory(client: Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def key_memory(client: Redis, key: str) -> int:
    return int(await client.memory_usage(key, samples=0) or 0)


async def memory(
    client: Redis,
    options: Options,
    board: Board,
    key: str,
    prefix: str,
    points: list[int],
    reached: list[datetime],
) -> dict[str, Any]:
    from gamification.leaderboards.store import Update, apply_updates

    count = len(board.ids)
    batches = [
        {key: Update({board.ids[i]: encode(points[i], reached[i], None) for i in r}, (), None)}
        for r in chunks(count, FEEDER_BATCH)
    ]
    before = before_fill = await used_memory(client)
    started = time.perf_counter()
    for updates in batches:
        await apply_updates(client, updates)
    fill_s = time.perf_counter() - started
    after = after_fill = await used_memory(client)
    usage = await key_memory(client, key)
    encoding = await client.object("encoding", key)
    size = int(await client.zcard(key))
    log(
        f"memory: {size:,} members packed in {fill_s:.1f}s ({count / fill_s:,.0f}/s through apply_updates); "
        f"MEMORY USAGE {usage:,} B = {usage / size:.1f} B/member ({encoding}); "
        f"used_memory +{after - before:,} B = {(after - before) / size:.1f} B/member"
    )
    figures: dict[str, Any] = {
        "members": size,
        "encoding": encoding,
        "memory_usage_bytes": usage,
        "bytes_per_member": round(usage / size, 1),
        "used_memory_delta_bytes": after - before,
        "used_memory_bytes_per_member": round((after - before) / size, 1),
        "fill_s": round(fill_s, 2),
        "fill_members_per_s": rate(count, fill_s),
    }

    plain = f"{prefix}bench:plain"
    before = await used_memory(client)
    for r in chunks(count, FEEDER_BATCH):
        await client.zadd(plain, {str(board.ids[i]): points[i] for i in r})
    after = await used_memory(client)
    plain_usage = await key_memory(client, plain)
    figures["plain_zset"] = {
        "encoding": await client.object("encoding", plain),
        "memory_usage_bytes": plain_usage,
        "bytes_per_member": round(plain_usage / count, 1),
        "used_memory_delta_bytes": after - before,
        "used_memory_bytes_per_member": round((after - before) / count, 1),
    }
    await client.unlink(plain)
    figures["packing_cost_bytes_per_member"] = round((usage - plain_usage) / count, 2)
    log(
        f"memory: plain ZSET with integer scores {plain_usage:,} B = {plain_usage / count:.1f} B/member; "
        f"packing costs {(usage - plain_usage) / count:+.2f} B/member"
    )

    small: dict[str, Any] = {}
    for name, scores in (
        ("packed", {str(board.ids[i]): encode(points[i], reached[i], None) for i in range(SMALL_BOARD)}),
        ("plain", {str(board.ids[i]): points[i] for i in range(SMALL_BOARD)}),
    ):
        small_key = f"{prefix}bench:small:{name}"
        await client.zadd(small_key, scores)
        small_usage = await key_memory(client, small_key)
        small[name] = {
            "encoding": await client.object("encoding", small_key),
            "memory_usage_bytes": small_usage,
            "bytes_per_member": round(small_usage / SMALL_BOARD, 1),
        }
        await client.unlink(small_key)
    figures[f"board_of_{SMALL_BOARD}"] = small
    log(
        f"memory: a {SMALL_BOARD}-member board is a {small['packed']['encoding']}: "
        f"{small['packed']['bytes_per_member']} B/member packed, {small['plain']['bytes_per_member']} plain"
    )
    info = await client.info("memory")
    figures["allocator"] = info.get("mem_allocator")
    figures["goal_bytes_per_member"] = GOAL_BYTES_PER_MEMBER
    # MEMORY USAGE counts a dict entry as sizeof (24 B); the allocator may hand out more (used_memory)
    figures["goal_met_by_memory_usage"] = usage / size <= GOAL_BYTES_PER_MEMBER
    figures["goal_met"] = (after_fill - before_fill) / size <= GOAL_BYTES_PER_MEMBER
    return figures


@dataclass
class PrivateRedis:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def spawn_private_redis() -> PrivateRedis:
    """A throw-away redis-server whose configuration the bench may change (the shared one's stays)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    directory = Path(tempfile.mkdtemp(prefix="loyalty-bench-lb-redis-"))
    port = free_port()
    config = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with (directory / "redis.log").open("wb") as sink:
        process = subprocess.Popen(
            [binary, *config, "--dir", str(directory)], stdout=sink, stderr=subprocess.STDOUT
        )
    return PrivateRedis(process, port, directory)


async def start_private_redis() -> PrivateRedis:
    private = spawn_private_redis()
    client = Redis(host="127.0.0.1", port=private.port)
    try:
        for _ in range(100):
            with contextlib.suppress(Exception):
                if await client.ping():
                    return private
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    private.stop()
    raise RuntimeError("the private redis-server did not start")


async def timed_calls(count: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    times = []
    for number in range(count):
        started = time.perf_counter()
        await call(number)
        times.append(time.perf_counter() - started)
    return times


async def listpack(redis_url: str, key: str, board: Board, samples: int) -> dict[str, Any]:
    """The 1M board RESTOREd into a private redis-server as a skiplist (the default threshold) and
    as a listpack (threshold above its size): memory, and what one update and one rank cost."""
    source = Redis.from_url(redis_url)  # bytes: DUMP payloads are binary
    private = await start_private_redis()
    client = Redis(host="127.0.0.1", port=private.port)
    try:
        payload = cast(bytes, await source.dump(key))
        count = int(await source.zcard(key))
        version = (await client.info("server"))["redis_version"]
        config = await client.config_get("zset-max-listpack-entries")
        default = int(cast(Any, config)["zset-max-listpack-entries"])
        figures: dict[str, Any] = {"redis_version": version, "dump_bytes": len(payload), "members": count}
        rng = random.Random(11)
        members = [str(board.ids[rng.randrange(len(board.ids))]) for _ in range(samples)]
        for name, threshold in (("skiplist", default), ("listpack", count + 1)):
            await client.config_set("zset-max-listpack-entries", threshold)
            started = time.perf_counter()
            await client.restore(name, 0, payload)
            restore_s = time.perf_counter() - started
            encoding = (await client.object("encoding", name)).decode()
            usage = int(await client.memory_usage(name, samples=0) or 0)

            async def zadd(number: int, name: str = name) -> object:
                return await client.zadd(name, {members[number]: float(number)})

            async def zrevrank(number: int, name: str = name) -> object:
                return await client.zrevrank(name, members[number])

            async def zrevrange(number: int, name: str = name) -> object:
                return await client.zrevrange(name, 0, TOP - 1, withscores=True)

            zadd_times = await timed_calls(samples, zadd)
            rank_times = await timed_calls(samples, zrevrank)
            top_times = await timed_calls(samples, zrevrange)
            figures[name] = {
                "zset_max_listpack_entries": threshold,
                "encoding": encoding,
                "memory_usage_bytes": usage,
                "bytes_per_member": round(usage / count, 1),
                "restore_s": round(restore_s, 3),
                "zadd_update_ms_p50": ms(statistics.median(zadd_times)),
                "zrevrank_ms_p50": ms(statistics.median(rank_times)),
                "zrevrange_top100_ms_p50": ms(statistics.median(top_times)),
            }
            log(
                f"listpack experiment, threshold {threshold:,}: {encoding}, {usage / count:.1f} B/member, "
                f"one ZADD {figures[name]['zadd_update_ms_p50']} ms, "
                f"ZREVRANK {figures[name]['zrevrank_ms_p50']} ms, "
                f"top 100 {figures[name]['zrevrange_top100_ms_p50']} ms (p50 of {samples}, incl. round trip)"
            )
            await client.unlink(name)
        return figures
    finally:
        await client.aclose()
        await source.aclose()
        private.stop()


# ------------------------------------------------------------------------------------- update path


async def write_path(
    client: Redis, options: Options, board: Board, key: str, points: list[int], now: datetime, prefix: str
) -> dict[str, Any]:
    """apply_updates alone: existing members get new scores, 2,000 per MULTI/EXEC, on one key and on the
    four keys of the `points` board's periods (as the feeder writes them)."""
    from gamification.leaderboards.store import BoardKey, Update, apply_updates
    from gamification.periods import PeriodKind, period_start

    rng = random.Random(13)
    chosen = rng.sample(range(len(board.ids)), min(options.updates, len(board.ids)))
    batches_1: list[dict[str, Update]] = []
    for r in chunks(len(chosen), FEEDER_BATCH):
        scores = {}
        for j in r:
            i = chosen[j]
            points[i] += rng.randint(1, 50)
            scores[board.ids[i]] = encode(points[i], now - timedelta(seconds=rng.uniform(0, 60)), None)
        batches_1.append({key: Update(scores, (), None)})
    started = time.perf_counter()
    for batch in batches_1:
        await apply_updates(client, batch)
    one_key_s = time.perf_counter() - started

    from domain.redis_store import RedisStore

    store = RedisStore(None, prefix, Path("."))  # only for key names
    expire_at = now + timedelta(days=400)
    period_keys = {}
    for period in (PeriodKind.MONTHLY, PeriodKind.WEEKLY, PeriodKind.DAILY):
        start = period_start(period, now, ZoneInfo("UTC"))
        period_keys[period] = (BoardKey(board.program_id, BOARD, "program", period, start).name(store), start)
    batches_4: list[dict[str, Update]] = []
    for r in chunks(len(chosen), FEEDER_BATCH):
        updates: dict[str, Update] = {}
        reached = {board.ids[chosen[j]]: now - timedelta(seconds=rng.uniform(0, 60)) for j in r}
        gained = {board.ids[chosen[j]]: rng.randint(1, 200) for j in r}
        updates[key] = Update(
            {board.ids[chosen[j]]: encode(points[chosen[j]], reached[board.ids[chosen[j]]], None) for j in r},
            (),
            None,
        )
        for period_key, start in period_keys.values():
            updates[period_key] = Update(
                {m: encode(gained[m], reached[m], start) for m in reached}, (), expire_at
            )
        batches_4.append(updates)
    started = time.perf_counter()
    for batch in batches_4:
        await apply_updates(client, batch)
    four_keys_s = time.perf_counter() - started
    members = len(chosen)
    figures = {
        "members": members,
        "batch": FEEDER_BATCH,
        "one_key_s": round(one_key_s, 3),
        "one_key_members_per_s": rate(members, one_key_s),
        "four_keys_s": round(four_keys_s, 3),
        "four_keys_members_per_s": rate(members, four_keys_s),
        "four_keys_zadd_elements_per_s": rate(4 * members, four_keys_s),
    }
    log(
        f"apply_updates: {members:,} members, one key {figures['one_key_members_per_s']:,.0f} members/s; "
        f"four period keys {figures['four_keys_members_per_s']:,.0f} members/s "
        f"({figures['four_keys_zadd_elements_per_s']:,.0f} ZADD elements/s)"
    )
    return figures


async def redis_benchmark(redis_url: str, requests: int, *command: str) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark is not on PATH")
    url = urlsplit(redis_url)
    database = url.path.strip("/") or "0"
    args = [binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "--dbnum", database]
    args += ["-c", "50", "-P", "16", "-n", str(requests), "-r", "1000000", "--csv", *command]
    if url.password:
        args[1:1] = ["-a", url.password, "--no-auth-warning"]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {stderr.decode(errors='replace')[:500]}")
    last = [line for line in stdout.decode().splitlines() if line.strip()][-1]
    fields = [f.strip('"') for f in last.split('","')]
    return {
        "command": " ".join(command),
        "requests": requests,
        "requests_per_s": float(fields[1]),
        "p50_ms": float(fields[4]),
        "p99_ms": float(fields[6]),
    }


def feeder_drafts(
    board: Board, count: int, when: Callable[[random.Random], datetime], tag: str, rng: random.Random
) -> list[Any]:
    from domain.events.validation import EventDraft

    return [
        EventDraft(
            f"{tag}-{i}",
            board.external_id(i),
            "purchase",
            when(rng),
            f"{rng.uniform(1, 120):.2f}",
        )
        for i in range(count)
    ]


async def record(ctx: Context, services: Any, program_id: int, drafts: Sequence[Any]) -> float:
    """Record the purchases in batches; ANALYZE every 10,000 events (autovacuum is off here, and the
    pipeline's externalId lookup turns quadratic on stale statistics: docs/benchmarks.md, Ingest)."""
    started = time.perf_counter()
    for start in range(0, len(drafts), RECORD_BATCH):
        outcomes = await services.events.record_events(program_id, drafts[start : start + RECORD_BATCH])
        bad = [o for o in outcomes if o.status.value != "ACCEPTED"]
        if bad:
            raise RuntimeError(f"record_events: not accepted: {bad[:3]}")
        if (start + RECORD_BATCH) % 10_000 == 0:
            await analyze(ctx.pg, ctx.database, "events")
    return time.perf_counter() - started


async def feed_rows(pg: PgServer, database: str) -> int:
    connection = await pg.connect(database)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM standings_feed"))
    finally:
        await connection.close()


async def feeder_pass(ctx: Context, options: Options, redis_pid: int | None) -> dict[str, Any]:
    """Purchases through the real pipeline, then StandingsFeeder.run_once timed until the feed is empty."""
    import gamification.leaderboards.feeder as feeder_module
    from api.runtime import build_services
    from domain.settings import Settings
    from gamification.leaderboards.feeder import StandingsFeeder
    from gamification.leaderboards.store import BoardKey, apply_updates
    from gamification.periods import PeriodKind

    settings = Settings(
        database_url=ctx.url,
        redis_url=options.redis_url,
        redis_prefix=ctx.prefix,
        secret_key=secrets.token_urlsafe(48),
        data_dir=ctx.data_dir,
        background=False,
    )
    services = build_services(settings)
    original = apply_updates
    redis_s = 0.0
    elements = 0

    async def timed_apply(client: Redis, updates: dict[str, Any], fence: Any = None) -> bool:
        nonlocal redis_s, elements
        started = time.perf_counter()
        try:
            return await original(client, updates, fence)
        finally:
            redis_s += time.perf_counter() - started
            elements += sum(len(u.scores) + len(list(u.removed)) for u in updates.values())

    try:
        program = await services.programs.create_program("lbfeed", "Feeder bench", "B2C")
        board = await seed_members(ctx.pg, ctx.database, program.id, "f", options.feed_members)
        await analyze(ctx.pg, ctx.database)
        feeder = next(loop for loop in services.loops if isinstance(loop, StandingsFeeder))
        now = datetime.now(UTC)
        since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        rng = random.Random(17)
        history = []
        for round_number in range(options.feed_history):
            history += feeder_drafts(
                board,
                options.feed_members,
                lambda r: now - timedelta(days=r.uniform(1, 60)),
                f"h{round_number}",
                rng,
            )
        history_s = await record(ctx, services, program.id, history)
        log(
            f"feeder: {len(history):,} history purchases recorded in {history_s:.1f}s "
            f"({len(history) / history_s:,.0f}/s)"
        )
        await analyze(ctx.pg, ctx.database)
        started = time.perf_counter()
        while await feeder.run_once():
            pass
        history_drain_s = time.perf_counter() - started
        log(f"feeder: history feed ({len(history):,} rows) drained in {history_drain_s:.1f}s")

        recent = feeder_drafts(
            board,
            options.feed_members,
            lambda r: now - timedelta(seconds=r.uniform(0, max(1.0, min(3600.0, since_midnight - 1)))),
            "now",
            rng,
        )
        recent_s = await record(ctx, services, program.id, recent)
        await analyze(ctx.pg, ctx.database)
        rows = await feed_rows(ctx.pg, ctx.database)
        feeder_module.__dict__["apply_updates"] = timed_apply  # time the Redis writes inside the pass
        cpu = Cpu(ctx.database, redis_pid)
        started = time.perf_counter()
        batches = 0
        while await feeder.run_once():
            batches += 1
        batches += 1
        drain_s = time.perf_counter() - started
        used = cpu.stop()
        feeder_module.__dict__["apply_updates"] = original
        left = await feed_rows(ctx.pg, ctx.database)
        await feeder.lease.release()

        # check: a sample of members' ALL_TIME scores against the ledger
        key = BoardKey(program.id, BOARD, "program", PeriodKind.ALL_TIME, None).name(services.redis)
        client = services.redis.client
        sample = random.Random(19).sample(range(options.feed_members), min(200, options.feed_members))
        connection = await ctx.pg.connect(ctx.database)
        try:
            ledger = dict(
                await connection.fetch(
                    "SELECT member_id, sum(points)::bigint FROM ledger_entries "
                    "WHERE member_id = ANY($1::bigint[]) GROUP BY member_id",
                    [board.ids[i] for i in sample],
                )
            )
        finally:
            await connection.close()
        wrong = 0
        for i in sample:
            score = await client.zscore(key, str(board.ids[i]))
            if score is None or decode(score).points != ledger.get(board.ids[i]):
                wrong += 1
        size = int(await client.zcard(key))
        figures = {
            "members": options.feed_members,
            "history_events_per_member": options.feed_history,
            "history_events_recorded_per_s": rate(len(history), history_s),
            "history_drain_s": round(history_drain_s, 2),
            "recent_events_recorded_per_s": rate(len(recent), recent_s),
            "feed_rows": rows,
            "feed_rows_left": left,
            "batches": batches,
            "drain_s": round(drain_s, 3),
            "members_per_s": rate(rows, drain_s),
            "redis_write_s": round(redis_s, 3),
            "redis_share": round(redis_s / drain_s, 3) if drain_s else None,
            "zadd_elements": elements,
            "cpu": used,
            "client_cpu_us_per_member": round(used["client_cpu_s"] / rows * 1e6, 1) if rows else None,
            "postgres_cpu_us_per_member": round(used["postgres_cpu_s"] / rows * 1e6, 1) if rows else None,
            "board_size": size,
            "sample_checked": len(sample),
            "sample_wrong": wrong,
        }
        log(
            f"feeder: {rows:,} feed rows drained in {drain_s:.2f}s "
            f"= {figures['members_per_s']:,.0f} members/s "
            f"({batches} run_once, Redis writes {redis_s:.2f}s = {100 * redis_s / drain_s:.0f}%); "
            f"{wrong} of {len(sample)} sampled scores differ from the ledger"
        )
        return figures
    finally:
        feeder_module.__dict__["apply_updates"] = original
        await services.close()


# -------------------------------------------------------------------------------------- read path


def plain_app() -> Starlette:
    """The baseline endpoint: the same Redis calls and one SQL member lookup, equivalent JSON, no GraphQL.

    Configured from the environment (LB_PLAIN_DSN, LB_PLAIN_REDIS_URL, LB_PLAIN_KEY, LB_PLAIN_PROGRAM);
    served by `uvicorn bench.leaderboards:plain_app --factory`.
    """
    dsn = os.environ["LB_PLAIN_DSN"]
    key = os.environ["LB_PLAIN_KEY"]
    program_id = int(os.environ["LB_PLAIN_PROGRAM"])
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        state["redis"] = Redis.from_url(os.environ["LB_PLAIN_REDIS_URL"], decode_responses=True)
        try:
            yield
        finally:
            await state["redis"].aclose()
            await state["pool"].close()

    def entries(rows: list[tuple[str, float]], offset: int, names: dict[int, str]) -> list[dict[str, Any]]:
        return [
            {"rank": offset + i + 1, "score": decode(score).points, "member": {"externalId": names[int(m)]}}
            for i, (m, score) in enumerate(rows)
        ]

    async def leaderboard(request: Request) -> Response:
        body = orjson.loads(await request.body())
        pool, redis = state["pool"], state["redis"]
        member_id = await pool.fetchval(
            "SELECT id FROM members WHERE program_id = $1 AND external_id = $2", program_id, body["member"]
        )
        top = await redis.zrevrange(key, 0, TOP - 1, withscores=True)
        around: list[tuple[str, float]] = []
        offset = 0
        if member_id is not None:
            rank = await redis.zrevrank(key, str(member_id))
            if rank is not None:
                offset = max(rank - RADIUS, 0)
                around = await redis.zrevrange(key, offset, rank + RADIUS, withscores=True)
        ids = list({int(m) for m, _ in top} | {int(m) for m, _ in around})
        rows = await pool.fetch("SELECT id, external_id FROM members WHERE id = ANY($1::bigint[])", ids)
        names = {row[0]: row[1] for row in rows}
        data = {"leaderboard": {"top": entries(top, 0, names), "around": entries(around, offset, names)}}
        return Response(orjson.dumps({"data": data}), media_type="application/json")

    async def healthz(_: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[Route("/leaderboard", leaderboard, methods=["POST"]), Route("/healthz", healthz)],
        lifespan=lifespan,
    )


def start_plain(env: dict[str, str], workers: int, data_dir: Path) -> Server:
    port = free_port()
    log_path = data_dir / "plain.log"
    options = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.leaderboards:plain_app", "--factory", *options],
            env=env,
            cwd=str(REPO),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(process, f"http://127.0.0.1:{port}", log_path)


@dataclass
class Endpoint:
    """One kind of server; its processes serve the clients in turn (client n: process n % count)."""

    name: str
    servers: list[Server]
    path: str
    headers: dict[str, str]
    bodies: list[bytes]

    def url(self, client: int) -> str:
        return f"{self.servers[client % len(self.servers)].base_url}{self.path}"


def graphql_data(content: bytes) -> Any:
    payload = orjson.loads(content)
    if payload.get("errors"):
        raise RuntimeError(f"errors: {orjson.dumps(payload['errors'][:2]).decode()}")
    return payload["data"]


async def drive(
    endpoint: Endpoint, concurrency: int, seconds: float, seed: int
) -> tuple[float, list[float], int]:
    """`concurrency` clients send requests back to back for `seconds`; (wall s, latencies, errors).

    Each client has its own httpx.AsyncClient and keep-alive connection: one shared pool costs the
    client far more CPU per request at 32 connections (its bookkeeping scans every connection)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(number: int) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + number)
        bodies, url = endpoint.bodies, endpoint.url(number)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        # plain http: no TLS context (loading the CA bundle costs ~20 ms of CPU per client)
        async with httpx.AsyncClient(
            limits=limits, timeout=httpx.Timeout(60.0), verify=False, trust_env=False
        ) as http:
            while time.perf_counter() < stop_at:
                body = bodies[rng.randrange(len(bodies))]
                started = time.perf_counter()
                response = await http.post(url, content=body, headers=endpoint.headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or b'"errors"' in response.content[:20]:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


@dataclass
class Tally:
    seconds: float = 0.0
    latencies: list[float] | None = None
    errors: int = 0
    cpu: dict[str, float] | None = None
    connections: int = 0

    def add(
        self, seconds: float, latencies: list[float], errors: int, cpu: dict[str, float], connections: int
    ) -> None:
        self.connections += connections
        self.seconds += seconds
        self.latencies = (self.latencies or []) + latencies
        self.errors += errors
        self.cpu = {k: round((self.cpu or {}).get(k, 0.0) + v, 3) for k, v in cpu.items()}

    def figures(self) -> dict[str, Any]:
        latencies = self.latencies or []
        count = len(latencies)
        cpu = self.cpu or {}
        per = {
            f"{name.removesuffix('_cpu_s')}_cpu_us_per_request": round(value / count * 1e6, 1)
            for name, value in cpu.items()
            if count
        }
        return {
            "requests": count,
            "seconds": round(self.seconds, 2),
            "requests_per_s": rate(count, self.seconds),
            "p50_ms": ms(percentile(latencies, 50)),
            "p99_ms": ms(percentile(latencies, 99)),
            "max_ms": ms(max(latencies)) if latencies else None,
            "errors": self.errors,
            "postgres_connections_opened": self.connections,
            "cpu": cpu,
            **per,
        }


async def pg_sessions(monitor: Any, database: str) -> int:
    """Connections ever opened to the database (PostgreSQL 14+; counted when a backend reports)."""
    await asyncio.sleep(1.1)  # backends report their statistics at most once a second
    value = await monitor.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = $1", database)
    return int(value or 0)


async def read_level(
    ctx: Context,
    options: Options,
    concurrency: int,
    endpoints: tuple[Endpoint, Endpoint],
    redis_pid: int | None,
    monitor: Any,
) -> dict[str, Any]:
    """Both endpoints under `concurrency` clients, in alternating rounds."""
    tallies = {"graphql": Tally(), "plain": Tally()}
    for round_number in range(options.rounds):
        order = endpoints if round_number % 2 == 0 else endpoints[::-1]
        for endpoint in order:
            await drive(endpoint, concurrency, options.warmup_s, seed=99)
            sessions = await pg_sessions(monitor, ctx.database)
            cpu = Cpu(ctx.database, redis_pid, [server.process.pid for server in endpoint.servers])
            seconds, latencies, errors = await drive(endpoint, concurrency, options.duration_s, round_number)
            used = cpu.stop()
            opened = await pg_sessions(monitor, ctx.database) - sessions
            tallies[endpoint.name].add(seconds, latencies, errors, used, opened)
            p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
            log(
                f"read path, {concurrency} clients, round {round_number + 1}, {endpoint.name}: "
                f"{len(latencies) / seconds:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"{errors} errors; CPU-s: server {used['server_cpu_s']:.1f}, "
                f"client {used['client_cpu_s']:.1f}, postgres {used['postgres_cpu_s']:.1f}, "
                f"redis {used['redis_cpu_s']:.1f}, other {used['other_cpu_s']:.1f}; "
                f"{opened} PostgreSQL connections opened"
            )
    g, p = tallies["graphql"].figures(), tallies["plain"].figures()
    figures: dict[str, Any] = {
        "concurrency": concurrency,
        "graphql": g,
        "plain": p,
        "ratio_requests_per_s": ratio(p["requests_per_s"], g["requests_per_s"]),
        "ratio_p50": ratio(g["p50_ms"] or 0, p["p50_ms"] or 0),
        "ratio_p99": ratio(g["p99_ms"] or 0, p["p99_ms"] or 0),
        "ratio_server_cpu_per_request": ratio(
            g.get("server_cpu_us_per_request", 0), p.get("server_cpu_us_per_request", 0)
        ),
    }
    figures["goal_met"] = (figures["ratio_requests_per_s"] or math.inf) <= GOAL_READ_RATIO
    log(
        f"read path, {concurrency} clients: GraphQL {g['requests_per_s']:,.0f} req/s "
        f"(p50 {g['p50_ms']} / p99 {g['p99_ms']} ms), "
        f"plain {p['requests_per_s']:,.0f} req/s (p50 {p['p50_ms']} / p99 {p['p99_ms']} ms): "
        f"ratio {figures['ratio_requests_per_s']}; server CPU per request "
        f"{g.get('server_cpu_us_per_request')} vs {p.get('server_cpu_us_per_request')} us"
    )
    return figures


async def read_path(
    ctx: Context, options: Options, board: Board, key: str, redis_pid: int | None
) -> dict[str, Any]:
    from api.runtime import build_services
    from domain.auth.scopes import Scope
    from domain.settings import Settings

    settings = Settings(
        database_url=ctx.url,
        redis_url=options.redis_url,
        redis_prefix=ctx.prefix,
        secret_key=secrets.token_urlsafe(48),
        data_dir=ctx.data_dir,
        background=False,
    )
    services = build_services(settings)
    try:
        created = await services.auth.create_api_key("lb", "bench", frozenset({Scope.LEADERBOARDS_READ}))
    finally:
        await services.close()
    await analyze(ctx.pg, ctx.database)
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": ctx.url,
        "LOYALTY_REDIS_URL": options.redis_url,
        "LOYALTY_REDIS_PREFIX": ctx.prefix,
        "LOYALTY_SECRET_KEY": secrets.token_urlsafe(48),
        "LOYALTY_DATA_DIR": str(ctx.data_dir),
        "LB_PLAIN_DSN": make_url(ctx.url).set(drivername="postgresql").render_as_string(hide_password=False),
        "LB_PLAIN_REDIS_URL": options.redis_url,
        "LB_PLAIN_KEY": key,
        "LB_PLAIN_PROGRAM": str(board.program_id),
    }
    rng = random.Random(23)
    members = [board.external_id(rng.randrange(len(board.ids))) for _ in range(2000)]
    servers: list[Server] = []
    # W single-worker processes per kind, the clients spread over them in turn (what a load balancer
    # does). Under `--shared-socket`, one uvicorn process with W workers sharing the listening socket:
    # a burst of keep-alive connections then tends to land on one worker (see docs/benchmarks.md).
    processes, workers = (1, options.workers) if options.shared_socket else (options.workers, 1)
    try:
        loyalty: list[Server] = []
        plain: list[Server] = []
        for number in range(processes):
            for kind, start, started in (("loyalty", start_server, loyalty), ("plain", start_plain, plain)):
                directory = ctx.data_dir / f"{kind}-{number}"
                directory.mkdir(parents=True, exist_ok=True)
                started.append(start(env, workers, directory))
                servers.append(started[-1])
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
            for server in servers:
                await wait_healthy(server, http)
            log(
                f"read path: {processes} loyalty serve and {processes} plain Starlette process(es) with "
                f"{workers} uvicorn worker(s) each"
            )
            graphql = Endpoint(
                "graphql",
                loyalty,
                "/graphql",
                {"Authorization": f"Bearer {created.key}", "Content-Type": "application/json"},
                [orjson.dumps({"query": QUERY, "variables": {"m": m}}) for m in members],
            )
            baseline = Endpoint(
                "plain",
                plain,
                "/leaderboard",
                {"Content-Type": "application/json"},
                [orjson.dumps({"member": m}) for m in members],
            )
            # the same answers: a few members, one near the top (its window is cut at rank 1)
            client = Redis.from_url(options.redis_url, decode_responses=True)
            try:
                second = cast(str, (await client.zrevrange(key, 1, 1))[0])
            finally:
                await client.aclose()
            probes = [board.external_id(int(second) - board.ids[0]), *members[:4], "nobody"]
            mismatched = 0
            for member in probes:
                answers = []
                for endpoint, body in (
                    (graphql, orjson.dumps({"query": QUERY, "variables": {"m": member}})),
                    (baseline, orjson.dumps({"member": member})),
                ):
                    response = await http.post(endpoint.url(0), content=body, headers=endpoint.headers)
                    answers.append(graphql_data(response.content))
                if answers[0] != answers[1]:
                    mismatched += 1
                    log(f"read path: answers differ for {member}: {str(answers)[:300]}")
        top_len = len(answers[0]["leaderboard"]["top"])
        log(f"read path: equivalence checked on {len(probes)} members, {mismatched} differ")

        monitor = await ctx.pg.connect(ctx.database)  # reads the connection counter, stays open
        levels: dict[str, Any] = {}
        try:
            for concurrency in options.concurrency:
                levels[str(concurrency)] = await read_level(
                    ctx, options, concurrency, (graphql, baseline), redis_pid, monitor
                )
        finally:
            await monitor.close()
        problems = []
        for server in servers:
            problems += [
                line for line in server.tail(200).splitlines() if "Traceback" in line or "ERROR" in line
            ]
        figures: dict[str, Any] = {
            "workers": options.workers,
            "layout": f"{processes} process(es) x {workers} uvicorn worker(s) per endpoint",
            "rounds": options.rounds,
            "duration_s_per_round": options.duration_s,
            "top": top_len,
            "radius": RADIUS,
            "equivalence_probes": len(probes),
            "equivalence_mismatches": mismatched,
            "levels": levels,
            "goal_ratio": GOAL_READ_RATIO,
            "goal_met": all(level["goal_met"] for level in levels.values()),
            "server_log_problems": problems[:10],
        }
        return figures
    finally:
        for server in servers:
            server.stop()


# ---------------------------------------------------------------------------------------------- run


@dataclass
class Context:
    pg: PgServer
    database: str
    url: str
    prefix: str
    data_dir: Path


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter rounds (under a minute)")
    parser.add_argument(
        "--members", type=int, help="members on the board (default 1,000,000; --quick 100,000)"
    )
    parser.add_argument(
        "--updates", type=int, help="members apply_updates rescores (200,000; --quick 20,000)"
    )
    parser.add_argument("--feed-members", type=int, help="members in the feeder pass (20,000; --quick 2,000)")
    parser.add_argument(
        "--feed-history", type=int, help="purchases per member before the timed pass (4; --quick 2)"
    )
    parser.add_argument(
        "--bench-requests", type=int, help="redis-benchmark requests per command (2,000,000; --quick 300,000)"
    )
    parser.add_argument("--duration", type=float, help="seconds per endpoint per round (15; --quick 3.5)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds before each measurement (2; --quick 0.5)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two endpoints")
    parser.add_argument(
        "--concurrency", help="concurrent HTTP clients, one level or several (default 8,32; --quick 32)"
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="server processes per endpoint")
    parser.add_argument(
        "--shared-socket",
        action="store_true",
        help="one process per endpoint with --workers uvicorn workers instead of single-worker processes",
    )
    parser.add_argument(
        "--latency-samples", type=int, default=20, help="timed calls in the listpack experiment"
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("LOYALTY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("LOYALTY_BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--skip-listpack", action="store_true")
    parser.add_argument("--skip-feeder", action="store_true")
    parser.add_argument("--skip-read", action="store_true")
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: Any, full: Any, fast: Any) -> Any:
        return value if value is not None else (fast if quick else full)

    options = Options(
        quick=quick,
        members=pick(args.members, 1_000_000, 100_000),
        updates=pick(args.updates, 200_000, 20_000),
        feed_members=pick(args.feed_members, 20_000, 2_000),
        feed_history=pick(args.feed_history, 4, 2),
        bench_requests=pick(args.bench_requests, 2_000_000, 300_000),
        duration_s=pick(args.duration, 15.0, 3.5),
        warmup_s=pick(args.warmup, 2.0, 0.5),
        rounds=args.rounds,
        concurrency=tuple(int(c) for c in pick(args.concurrency, "8,32", "32").split(",")),
        workers=args.workers,
        shared_socket=args.shared_socket,
        latency_samples=args.latency_samples,
        database_url=args.database_url,
        redis_url=args.redis_url,
        skip_listpack=args.skip_listpack,
        skip_feeder=args.skip_feeder,
        skip_read=args.skip_read,
    )
    if options.members < SMALL_BOARD or options.members > 9_999_999:
        parser.error(f"--members: between {SMALL_BOARD} and 9,999,999")
    if min(options.updates, options.feed_members, options.bench_requests, options.rounds) < 1:
        parser.error("sizes and --rounds must be positive")
    if options.feed_history < 0 or options.duration_s <= 0 or min(options.concurrency) < 1:
        parser.error("--feed-history not negative, --duration and --concurrency positive")
    return options


async def run(options: Options) -> dict[str, Any]:
    from api.runtime import build_services
    from domain.settings import Settings
    from gamification.leaderboards.store import BoardKey
    from gamification.periods import PeriodKind

    began = time.perf_counter()
    pg = PgServer.parse(options.database_url)
    run_id = secrets.token_hex(4)
    database, prefix = f"loyalty_bench_lb_{run_id}", f"bench:lb:{run_id}:"
    data_dir = Path(tempfile.mkdtemp(prefix=f"loyalty-bench-lb-{run_id}-"))
    busy = await machine_busy()
    log(
        f"database {database}, redis prefix {prefix}, {options.members:,} members; "
        f"machine busy before the start: {busy:.2f} of {os.cpu_count()} cores"
    )
    figures: dict[str, Any] = {
        "bench": "leaderboards",
        "quick": options.quick,
        "members": options.members,
        "cores": os.cpu_count(),
        "busy_cores_before": round(busy, 2),
    }
    created = False
    client = Redis.from_url(options.redis_url, decode_responses=True)
    try:
        redis_info = await client.info("server")
        local = urlsplit(options.redis_url).hostname in ("127.0.0.1", "localhost", "::1")
        redis_pid = int(redis_info["process_id"]) if local else None  # its CPU is read from /proc
        figures["redis_version"] = redis_info["redis_version"]
        url = await pg.create(database)
        created = True
        ctx = Context(pg, database, url, prefix, data_dir)
        settings = Settings(
            database_url=url,
            redis_url=options.redis_url,
            redis_prefix=prefix,
            secret_key=secrets.token_urlsafe(48),
            data_dir=data_dir,
            background=False,
        )
        services = build_services(settings)
        try:
            program = await services.programs.create_program("lb", "Leaderboard bench", "B2C")
            key = BoardKey(program.id, BOARD, "program", PeriodKind.ALL_TIME, None).name(services.redis)
        finally:
            await services.close()
        started = time.perf_counter()
        connection = await pg.connect(database)
        try:  # 7-digit member ids, as in any deployment past a million members (see memory())
            await connection.execute(
                "SELECT setval(pg_get_serial_sequence('members', 'id'), $1)", FIRST_ID - 1
            )
        finally:
            await connection.close()
        board = await seed_members(pg, database, program.id, "m", options.members)
        await analyze(pg, database)
        log(f"{options.members:,} members inserted and analyzed in {time.perf_counter() - started:.1f}s")

        now = datetime.now(UTC)
        started = time.perf_counter()
        points, reached = board_scores(options.members, now)
        log(f"scores drawn in {time.perf_counter() - started:.1f}s")
        figures["memory"] = await memory(client, options, board, key, prefix, points, reached)
        if not options.skip_listpack:
            figures["memory"]["listpack_experiment"] = await listpack(
                options.redis_url, key, board, options.latency_samples
            )

        writes = await write_path(client, options, board, key, points, now, prefix)
        raw_zadd = await redis_benchmark(
            options.redis_url,
            options.bench_requests,
            "zadd",
            f"{prefix}raw:zadd",
            "__rand_int__",
            "__rand_int__",
        )
        raw_zincrby = await redis_benchmark(
            options.redis_url, options.bench_requests, "zincrby", f"{prefix}raw:zincrby", "1", "__rand_int__"
        )
        await client.unlink(f"{prefix}raw:zadd", f"{prefix}raw:zincrby")
        log(
            f"redis-benchmark -P 16: ZADD {raw_zadd['requests_per_s']:,.0f}/s, "
            f"ZINCRBY {raw_zincrby['requests_per_s']:,.0f}/s"
        )
        writes["redis_benchmark_zadd"] = raw_zadd
        writes["redis_benchmark_zincrby"] = raw_zincrby
        writes["ratio_zadd_to_one_key"] = ratio(raw_zadd["requests_per_s"], writes["one_key_members_per_s"])
        writes["ratio_zadd_to_four_keys_elements"] = ratio(
            raw_zadd["requests_per_s"], writes["four_keys_zadd_elements_per_s"]
        )
        if not options.skip_feeder:
            feeder = await feeder_pass(ctx, options, redis_pid)
            writes["feeder"] = feeder
            writes["ratio_zadd_to_feeder"] = ratio(raw_zadd["requests_per_s"], feeder["members_per_s"])
        figures["writes"] = writes

        if not options.skip_read:
            figures["read"] = await read_path(ctx, options, board, key, redis_pid)
    finally:
        await client.aclose()
        if created:
            await pg.drop(database)
        await clear_redis(options.redis_url, prefix)
        shutil.rmtree(data_dir, ignore_errors=True)
        log(f"dropped {database}, cleared {prefix}*")
    figures["elapsed_s"] = round(time.perf_counter() - began, 1)
    feeder_figures = figures.get("writes", {}).get("feeder")
    read = figures.get("read")
    figures["checks_ok"] = (
        figures["memory"]["members"] == options.members
        and (
            feeder_figures is None
            or (
                feeder_figures["sample_wrong"] == 0
                and feeder_figures["feed_rows_left"] == 0
                and feeder_figures["board_size"] == options.feed_members
            )
        )
        and (
            read is None
            or (
                read["equivalence_mismatches"] == 0
                and all(
                    level[name]["errors"] == 0
                    for level in read["levels"].values()
                    for name in ("graphql", "plain")
                )
            )
        )
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # uvloop, as `loyalty serve` (uvicorn) runs: the in-process feeder pass runs as it would in a
    # server, and the HTTP load costs the client less CPU, which it shares with the servers
    figures = uvloop.run(run(options))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0 if figures["checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
