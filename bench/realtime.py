"""Realtime benchmark: live segment changes end to end, next to raw Redis pub/sub, and time-flip lag.

Everything runs against a real `loyalty serve --workers W` process (default 2) on a fresh
PostgreSQL database migrated with `migrations.upgrade` (dropped at the end) and the local Redis
under a fresh key prefix (cleared at the end). Programs and API keys are made with the CLI.

* latency: N graphql-transport-ws subscribers (N = 1, 100, 1,000; websockets, loopback) subscribe
  to `segmentChanges(segmentKeys: ["buyers"])` (a DYNAMIC segment `count(purchase) >= 1`). Each
  sample records one purchase for a fresh member through `recordEvents` (one HTTP request, so the
  member ENTERS the segment); t0 is when the HTTP response has arrived, t1 when a subscriber has
  received that member's change; latency = t1 - t0 for every subscriber, p50/p99 over subscribers
  x samples. Samples run one after another after a warm-up. Interleaved with each sample, the
  baseline: N redis-py asyncio pub/sub connections subscribed to one channel, one PUBLISH of a
  payload shaped like the `next` frame; latency = receive - the instant before PUBLISH.
* time flips: a second program with a DYNAMIC segment `days_since_last(purchase) >= 30` and M
  members (10,000; --quick 1,000). Each member gets one purchase with occurredAt = T_i - 30 days,
  where the due instants T_i are spread evenly over a window (60 s; --quick 10 s) that starts a
  margin after the set-up began, so the set-up (recording the M purchases) is over before the
  first one is due. The scheduler inside `loyalty serve` must flip each member at T_i. One
  subscriber records when each ENTERED arrives (end-to-end lag = arrival - T_i), and afterwards
  the change log gives the scheduler's own lag (`segment_changes.at` - T_i). Baseline: what a
  "poll everything" scheduler would pay per tick, a full `recomputeSegments(keys: [segment])`
  of that segment in the same database (median of 3), next to the CPU the server and
  PostgreSQL spent per second of the flip window.

Progress goes to stderr; the last line on stdout is one JSON object with the figures.
Usage: .venv/bin/python bench/realtime.py [--quick] [--samples N] [--flip-members N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` when run as a script

from bench.harness import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    DEFAULT_WORKERS,
    CpuMeter,
    PgServer,
    Server,
    _children,
    _machine_busy_s,
    clear_redis,
    cli,
    graphql,
    log,
    start_server,
    wait_healthy,
)

PROTOCOL = Subprotocol("graphql-transport-ws")
SCOPES = "segments:read,segments:write,members:write,events:write"
LEVELS = (1, 100, 1000)
LATENCY_SEGMENT = "buyers"
FLIP_SEGMENT = "lapsed"
FLIP_RULE = "days_since_last(purchase) >= 30"
FLIP_DAYS = 30
GOAL_P99_MS_AT_100 = 50.0
GOAL_FLIP_MAX_S = 60.0
GOAL_FLIP_P99_S = 10.0
SAMPLE_TIMEOUT_S = 10.0
RAMP_STEP = 100  # connections opened at once
PROBES = 5  # readiness probes per level
MEMBERS_PER_CALL = 1000
EVENTS_PER_CALL = 500

SUBSCRIPTION = (
    "subscription($keys: [String!]) { segmentChanges(segmentKeys: $keys) "
    "{ cursor segmentKey memberExternalId change at } }"
)
RECORD = (
    "mutation($events: [EventInput!]!) "
    "{ recordEvents(events: $events) { results { externalId status message } } }"
)
UPSERT = "mutation($members: [MemberInput!]!) { upsertMembers(members: $members) { upserted } }"
CREATE_SEGMENT = "mutation($input: SegmentInput!) { createSegment(input: $input) { key } }"
RECOMPUTE = "mutation($keys: [String!]) { recomputeSegments(keys: $keys) }"


# ------------------------------------------------------------------------------------------ figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as bench/ingest.py)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def secs(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds, 3)


async def machine_busy(seconds: float = 2.0) -> float:
    """Busy cores of the whole machine over a short look, before the bench starts (other work)."""
    before = _machine_busy_s()
    await asyncio.sleep(seconds)
    return (_machine_busy_s() - before) / seconds


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-files soft limit (children such as the server inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


# ------------------------------------------------------------------------------------ arrivals


@dataclass
class Pending:
    expected: int
    times: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Arrivals:
    """Arrival times of one member's change at each subscriber, for the samples being waited on."""

    def __init__(self) -> None:
        self.waiting: dict[str, Pending] = {}
        self.unexpected = 0
        self.errors: Counter[str] = Counter()

    def expect(self, member: str, count: int) -> Pending:
        pending = Pending(count)
        self.waiting[member] = pending
        return pending

    def forget(self, member: str) -> None:
        self.waiting.pop(member, None)

    def arrived(self, member: str, when: float) -> None:
        pending = self.waiting.get(member)
        if pending is None:
            self.unexpected += 1
            return
        pending.times.append(when)
        if len(pending.times) >= pending.expected:
            pending.done.set()


class FlipArrivals(Arrivals):
    """Every arrival of the flip members' changes (wall clock), once `collect` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.due: dict[str, float] | None = None
        self.times: dict[str, list[float]] = {}
        self.all_arrived = asyncio.Event()

    def collect(self, due: dict[str, float]) -> None:
        self.due = due

    def arrived(self, member: str, when: float) -> None:
        if self.due is None or member not in self.due:
            super().arrived(member, when)
            return
        self.times.setdefault(member, []).append(when)
        if len(self.times) == len(self.due):
            self.all_arrived.set()


# --------------------------------------------------------------------------------- subscribers


class WsSubscriber:
    """One graphql-transport-ws connection with one segmentChanges subscription; stamps each `next`."""

    def __init__(
        self, url: str, token: str, keys: list[str], sink: Arrivals, wall_clock: bool = False
    ) -> None:
        self.url = url
        self.token = token
        self.keys = keys
        self.sink = sink
        self.clock = time.time if wall_clock else time.perf_counter
        self.connection: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.changes: Counter[str] = Counter()

    async def open(self) -> None:
        # no client pings and no compression: the client shares the 2 cores with the server
        self.connection = await connect(
            self.url, subprotocols=[PROTOCOL], ping_interval=None, compression=None, open_timeout=60
        )
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {self.token}"}}
        await self.connection.send(orjson.dumps(init).decode())
        while True:
            message = orjson.loads(await asyncio.wait_for(self.connection.recv(), 30))
            if message.get("type") == "ping":
                await self.connection.send('{"type":"pong"}')
                continue
            if message.get("type") != "connection_ack":
                raise RuntimeError(f"connection_init: {message}")
            break
        subscribe = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": SUBSCRIPTION, "variables": {"keys": self.keys}},
        }
        await self.connection.send(orjson.dumps(subscribe).decode())
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.connection is not None
        try:
            async for raw in self.connection:
                when = self.clock()
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "next":
                    payload = message["payload"]
                    if payload.get("errors"):
                        self.sink.errors[str(payload["errors"])[:200]] += 1
                        continue
                    change = payload["data"]["segmentChanges"]
                    self.changes[change["change"]] += 1
                    if change["change"] == "ENTERED":
                        self.sink.arrived(change["memberExternalId"], when)
                elif kind == "ping":
                    await self.connection.send('{"type":"pong"}')
                elif kind in ("error", "complete"):
                    self.sink.errors[f"{kind}: {str(message.get('payload'))[:200]}"] += 1
        except Exception as error:  # a closed connection ends the reader; counted, never raised
            self.sink.errors[f"closed: {error}"[:200]] += 1

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 5)


class RedisSubscriber:
    """One redis-py asyncio pub/sub connection subscribed to the baseline channel."""

    def __init__(self, redis_url: str, channel: str, sink: Arrivals) -> None:
        self.client = Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.channel = channel
        self.sink = sink
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.pubsub.subscribe(self.channel)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.pubsub.listen():
                when = time.perf_counter()
                if message["type"] != "message":
                    continue
                frame = orjson.loads(message["data"])  # parsed like the WebSocket frame, for parity
                self.sink.arrived(frame["payload"]["data"]["segmentChanges"]["memberExternalId"], when)
        except Exception as error:
            self.sink.errors[f"redis: {error}"[:200]] += 1

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


async def ramp(pool: list[Any], target: int, make: Any) -> float:
    """Open subscribers `RAMP_STEP` at a time until the pool has `target`; returns the seconds taken."""
    started = time.perf_counter()
    while len(pool) < target:
        batch = [make() for _ in range(min(RAMP_STEP, target - len(pool)))]
        pool.extend(batch)  # before opening, so a failure still closes them
        await asyncio.gather(*(s.open() for s in batch))
    return time.perf_counter() - started


async def close_all(pool: Sequence[Any]) -> None:
    await asyncio.gather(*(s.close() for s in pool))


def server_rss_mb(server: Server) -> float:
    """Resident memory of the server's processes (supervisor and workers), MB."""
    total = 0
    for pid in [server.process.pid, *_children(server.process.pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def connections_per_process(server: Server, port: int) -> dict[str, int]:
    """Established TCP connections on the server's port held by each server process (/proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    counts: dict[str, int] = {}
    for pid in [server.process.pid, *_children(server.process.pid)]:
        found = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        found += 1
        if found:
            counts[str(pid)] = found
    return counts


# ------------------------------------------------------------------------------------ the bench


@dataclass(frozen=True)
class Options:
    samples: int
    warmup: int
    levels: tuple[int, ...]
    flip_members: int
    flip_window_s: float
    flip_margin_s: float | None
    flip_grace_s: float
    database_url: str
    redis_url: str
    workers: int
    quick: bool
    skip_latency: bool
    skip_flips: bool


@dataclass
class Context:
    pg: PgServer
    database: str
    env: dict[str, str]
    server: Server
    http: httpx.AsyncClient
    run_id: str
    redis_url: str
    prefix: str

    @property
    def endpoint(self) -> str:
        return f"{self.server.base_url}/graphql"

    @property
    def ws_url(self) -> str:
        return self.server.base_url.replace("http://", "ws://") + "/graphql"

    @property
    def port(self) -> int:
        return int(self.server.base_url.rsplit(":", 1)[1])

    async def call(self, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = orjson.dumps({"query": query, "variables": variables})
        return await graphql(self.http, self.endpoint, headers, body)

    async def program(self, key: str) -> str:
        """A program made with the CLI and an API key with the scopes the bench needs."""
        await cli(self.env, "program", "create", "--key", key, "--name", key.title(), "--kind", "B2C")
        created = await cli(
            self.env, "apikey", "create", "--program", key, "--name", "bench", "--scopes", SCOPES
        )
        token: str = created["key"]
        return token

    async def upsert(self, token: str, members: Sequence[str], joined: datetime) -> None:
        for start in range(0, len(members), MEMBERS_PER_CALL):
            chunk = members[start : start + MEMBERS_PER_CALL]
            inputs = [{"externalId": m, "joinedAt": joined.isoformat()} for m in chunk]
            data = await self.call(token, UPSERT, {"members": inputs})
            if data["upsertMembers"]["upserted"] != len(chunk):
                raise RuntimeError(f"upsertMembers: {data} for {len(chunk)} members")

    async def record(self, token: str, events: list[dict[str, Any]]) -> None:
        data = await self.call(token, RECORD, {"events": events})
        results = data["recordEvents"]["results"]
        bad = [r for r in results if r["status"] != "ACCEPTED"]
        if bad or len(results) != len(events):
            raise RuntimeError(
                f"recordEvents: {len(results)} results for {len(events)}, not accepted: {bad[:3]}"
            )

    async def analyze(self) -> None:
        """autovacuum is off on this machine: give the planner the statistics it would have."""
        connection = await self.pg.connect(self.database)
        try:
            await connection.execute("ANALYZE")
        finally:
            await connection.close()


def purchase(ctx: Context, member: str, at: datetime) -> dict[str, Any]:
    return {
        "externalId": f"ev-{ctx.run_id}-{member}",
        "memberExternalId": member,
        "type": "purchase",
        "occurredAt": at.isoformat(),
        "amount": "10.00",
    }


# ------------------------------------------------------------------------------------- latency


@dataclass
class Level:
    subscribers: int
    latencies: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    lasts: list[float] = field(default_factory=list)
    baseline_firsts: list[float] = field(default_factory=list)
    baseline_lasts: list[float] = field(default_factory=list)
    lost: int = 0
    baseline_lost: int = 0
    per_sample: list[list[float]] = field(default_factory=list)
    #: (last arrival, sample number, first arrival) of every sample, for the outliers
    worst_samples: list[tuple[float, int, float]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


async def latency(ctx: Context, options: Options) -> dict[str, Any]:
    token = await ctx.program("rt")
    await ctx.call(
        token,
        CREATE_SEGMENT,
        {
            "input": {
                "key": LATENCY_SEGMENT,
                "name": "Buyers",
                "kind": "DYNAMIC",
                "rule": "count(purchase) >= 1",
            }
        },
    )
    per_level = PROBES + options.warmup + options.samples
    members = {n: [f"lat{n}-{k:05d}" for k in range(per_level)] for n in options.levels}
    await ctx.upsert(
        token, [m for ms_ in members.values() for m in ms_], datetime.now(UTC) - timedelta(days=1)
    )
    await ctx.analyze()
    log(f"latency: program, segment '{LATENCY_SEGMENT}' and {sum(map(len, members.values()))} members ready")

    ws_sink, redis_sink = Arrivals(), Arrivals()
    channel = f"{ctx.prefix}baseline"
    publisher = Redis.from_url(ctx.redis_url)
    ws_pool: list[WsSubscriber] = []
    redis_pool: list[RedisSubscriber] = []
    levels: list[Level] = []

    async def ws_sample(member: str, count: int) -> tuple[list[float], float]:
        pending = ws_sink.expect(member, count)
        sent = time.perf_counter()
        await ctx.record(token, [purchase(ctx, member, datetime.now(UTC))])
        t0 = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pending.done.wait(), SAMPLE_TIMEOUT_S)
        ws_sink.forget(member)
        return [t - t0 for t in pending.times], t0 - sent

    async def redis_sample(member: str, count: int) -> list[float]:
        change = {
            "cursor": "0",
            "segmentKey": LATENCY_SEGMENT,
            "memberExternalId": member,
            "change": "ENTERED",
        }
        frame = {"type": "next", "id": "1", "payload": {"data": {"segmentChanges": {**change, "at": ""}}}}
        payload = orjson.dumps(frame)
        pending = redis_sink.expect(member, count)
        t0 = time.perf_counter()
        await publisher.publish(channel, payload)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pending.done.wait(), SAMPLE_TIMEOUT_S)
        redis_sink.forget(member)
        return [t - t0 for t in pending.times]

    try:
        for count in options.levels:
            names = iter(members[count])
            ws_ramp = await ramp(
                ws_pool, count, lambda: WsSubscriber(ctx.ws_url, token, [LATENCY_SEGMENT], ws_sink)
            )
            redis_ramp = await ramp(
                redis_pool, count, lambda: RedisSubscriber(ctx.redis_url, channel, redis_sink)
            )
            # readiness: a subscription has no acknowledgement, so send changes until one reaches all
            for attempt in range(PROBES):
                arrived, _ = await ws_sample(next(names), count)
                base = await redis_sample(f"probe-{count}-{attempt}", count)
                if len(arrived) == count and len(base) == count:
                    break
                log(f"{count} subscribers: probe {attempt} reached {len(arrived)} / {len(base)}; again")
                await asyncio.sleep(1)
            else:
                raise RuntimeError(f"{count} subscribers: a change never reached all of them")
            # the client's own collector must not pause the measurement: keep what exists out of it
            gc.collect()
            gc.freeze()
            spread = connections_per_process(ctx.server, ctx.port)
            log(
                f"{count} subscribers connected (ramp {ws_ramp:.1f}s ws, {redis_ramp:.1f}s redis; "
                f"server connections per process {spread})"
            )
            for k in range(options.warmup):
                await ws_sample(next(names), count)
                await redis_sample(f"warm-{count}-{k}", count)
            level = Level(count)
            meter = CpuMeter(ctx.server.process.pid, ctx.database)
            started = time.perf_counter()
            for k in range(options.samples):
                arrived, http_s = await ws_sample(next(names), count)
                base = await redis_sample(f"s-{count}-{k}", count)
                level.latencies += arrived
                level.per_sample.append(arrived)
                level.http.append(http_s)
                level.baseline += base
                if arrived:
                    level.firsts.append(min(arrived))
                    level.lasts.append(max(arrived))
                if base:
                    level.baseline_firsts.append(min(base))
                    level.baseline_lasts.append(max(base))
                level.lost += count - len(arrived)
                level.baseline_lost += count - len(base)
                level.worst_samples.append(
                    (max(arrived, default=math.inf), k, min(arrived, default=math.inf))
                )
            seconds = time.perf_counter() - started
            cpu = meter.stop()
            level.figures = level_figures(level, options.samples, seconds, cpu, spread)
            level.figures["server_rss_mb"] = server_rss_mb(ctx.server)
            levels.append(level)
            f = level.figures
            log(
                f"{count} subscribers: p50 {f['p50_ms']} / p99 {f['p99_ms']} ms "
                f"(redis {f['baseline_p50_ms']} / {f['baseline_p99_ms']} ms; ratio p99 {f['ratio_p99']}); "
                f"lost {level.lost}; cpu {cpu}"
            )
    finally:
        await close_all(ws_pool)
        await close_all(redis_pool)
        with contextlib.suppress(Exception):
            await publisher.aclose()
    by_count = {str(level.subscribers): level.figures for level in levels}
    at_100 = by_count.get("100", {}).get("p99_ms")
    changes: Counter[str] = Counter()
    for subscriber in ws_pool:
        changes.update(subscriber.changes)
    per_delivery = None
    if len(levels) > 1:
        low, high = levels[0], levels[-1]
        extra = high.figures["server_cpu_ms_per_sample"] - low.figures["server_cpu_ms_per_sample"]
        per_delivery = round(extra * 1000 / (high.subscribers - low.subscribers))
    return {
        "levels": by_count,
        # marginal server CPU per change delivered to one more subscriber (largest vs smallest level)
        "server_cpu_us_per_delivery": per_delivery,
        "goal_p99_ms_at_100": GOAL_P99_MS_AT_100,
        "goal_met": at_100 is not None and at_100 <= GOAL_P99_MS_AT_100,
        "unexpected_changes": ws_sink.unexpected,
        "changes_received": dict(changes),
        "errors": dict(ws_sink.errors + redis_sink.errors),
    }


def level_figures(
    level: Level, samples: int, seconds: float, cpu: dict[str, float], spread: dict[str, int]
) -> dict[str, Any]:
    p50, p99 = percentile(level.latencies, 50), percentile(level.latencies, 99)
    b50, b99 = percentile(level.baseline, 50), percentile(level.baseline, 99)
    worst = sorted(level.worst_samples, reverse=True)[:3]
    half = len(level.per_sample) // 2
    early = [v for sample in level.per_sample[:half] for v in sample]
    late = [v for sample in level.per_sample[half:] for v in sample]
    return {
        "subscribers": level.subscribers,
        "samples": samples,
        "received": len(level.latencies),
        "lost": level.lost,
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "max_ms": ms(max(level.latencies, default=math.nan)),
        # drift over the run: the first half of the samples against the second half
        "p99_first_half_ms": ms(percentile(early, 99)),
        "p99_second_half_ms": ms(percentile(late, 99)),
        "min_ms": ms(min(level.latencies, default=math.nan)),
        "negative": sum(1 for v in level.latencies if v < 0),
        # per sample: the first subscriber served (the path) and the last one (path + fan-out)
        "first_p50_ms": ms(percentile(level.firsts, 50)),
        "first_p99_ms": ms(percentile(level.firsts, 99)),
        "last_p50_ms": ms(percentile(level.lasts, 50)),
        "last_p99_ms": ms(percentile(level.lasts, 99)),
        "http_p50_ms": ms(percentile(level.http, 50)),
        "http_p99_ms": ms(percentile(level.http, 99)),
        "baseline_p50_ms": ms(b50),
        "baseline_p99_ms": ms(b99),
        "baseline_first_p50_ms": ms(percentile(level.baseline_firsts, 50)),
        "baseline_last_p50_ms": ms(percentile(level.baseline_lasts, 50)),
        "baseline_lost": level.baseline_lost,
        "ratio_p50": round(p50 / b50, 1) if b50 > 0 else None,
        "ratio_p99": round(p99 / b99, 1) if b99 > 0 else None,
        # the 3 slowest samples: [sample, first subscriber served, last subscriber served]
        "worst_samples_ms": [[k, ms(first), ms(last)] for last, k, first in worst],
        "server_cpu_ms_per_sample": round(cpu.get("server_cpu_s", 0.0) * 1000 / samples, 1),
        "client_cpu_ms_per_sample": round(cpu["client_cpu_s"] * 1000 / samples, 1),
        "seconds": round(seconds, 2),
        "connections_per_process": sorted(spread.values(), reverse=True),
        "cpu": cpu,
    }


# ---------------------------------------------------------------------------------- time flips


async def flips(ctx: Context, options: Options) -> dict[str, Any]:
    token = await ctx.program("flips")
    rule = {"key": FLIP_SEGMENT, "name": "Lapsed", "kind": "DYNAMIC", "rule": FLIP_RULE}
    await ctx.call(token, CREATE_SEGMENT, {"input": rule})
    count = options.flip_members
    members = [f"f{i:06d}" for i in range(count)]
    await ctx.upsert(token, [*members, "f-probe"], datetime.now(UTC) - timedelta(days=400))
    await ctx.analyze()
    log(f"flips: segment '{FLIP_SEGMENT}' ({FLIP_RULE}) and {count} members ready")

    sink = FlipArrivals()
    subscriber = WsSubscriber(ctx.ws_url, token, [FLIP_SEGMENT], sink, wall_clock=True)
    try:
        await subscriber.open()
        # readiness: a member whose last purchase is 31 days old enters at once, through ingest
        probe = sink.expect("f-probe", 1)
        await ctx.record(token, [purchase(ctx, "f-probe", datetime.now(UTC) - timedelta(days=FLIP_DAYS + 1))])
        await asyncio.wait_for(probe.done.wait(), 30)
        sink.forget("f-probe")

        window = options.flip_window_s
        margin = options.flip_margin_s if options.flip_margin_s is not None else 2.0 + count / 500
        setup_started = time.time()
        start = setup_started + margin
        due: dict[str, float] = {}
        events: list[dict[str, Any]] = []
        for i, member in enumerate(members):
            instant = datetime.fromtimestamp(start + window * (i + 0.5) / count, UTC)
            occurred = (instant - timedelta(days=FLIP_DAYS)).replace(
                microsecond=instant.microsecond // 1000 * 1000
            )
            due[member] = (occurred + timedelta(days=FLIP_DAYS)).timestamp()
            events.append(purchase(ctx, member, occurred))
        sink.collect(due)
        for begin in range(0, count, EVENTS_PER_CALL):
            await ctx.record(token, events[begin : begin + EVENTS_PER_CALL])
        setup_done = time.time()
        slack = start - setup_done
        log(
            f"flips: {count} purchases recorded in {setup_done - setup_started:.1f}s; "
            f"the first member is due in {slack:.1f}s, the last in {slack + window:.0f}s"
        )
        if slack < 0:
            log("flips: WARNING the set-up overran the margin; raise --flip-margin")
        # the rest of the margin is quiet (nothing due yet): the server's idle CPU, for comparison
        await asyncio.sleep(min(0.5, max(0.0, start - time.time())))
        idle_meter, idle_started = CpuMeter(ctx.server.process.pid, ctx.database), time.time()
        await asyncio.sleep(max(0.0, start - time.time()))
        idle_cpu, idle_s = idle_meter.stop(), time.time() - idle_started
        meter = CpuMeter(ctx.server.process.pid, ctx.database)
        watch_started = time.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.all_arrived.wait(), window + options.flip_grace_s)
        watched = time.time() - watch_started
        cpu = meter.stop()
        log(f"flips: {len(sink.times)} / {count} changes arrived in {watched:.1f}s; cpu {cpu}")
    finally:
        await subscriber.close()

    logged = await change_log(ctx)
    times_by_member = sink.times
    end_to_end = [min(times) - due[m] for m, times in times_by_member.items() if m in due]
    scheduler = [at - due[m] for m, at in logged.items() if m in due]
    early_at_ingest = sum(1 for m, times in times_by_member.items() if m in due and min(times) < setup_done)
    duplicates = sum(len(times) - 1 for times in times_by_member.values())
    last_arrival = max((min(t) for t in times_by_member.values()), default=math.nan)

    recomputes: list[float] = []
    recompute_cpu: list[dict[str, float]] = []
    for _ in range(3):
        meter = CpuMeter(ctx.server.process.pid, ctx.database)
        began = time.perf_counter()
        seen = (await ctx.call(token, RECOMPUTE, {"keys": [FLIP_SEGMENT]}))["recomputeSegments"]
        recomputes.append(time.perf_counter() - began)
        recompute_cpu.append(meter.stop())
    recompute_s = statistics.median(recomputes)
    recompute_cpu_s = statistics.mean(c.get("server_cpu_s", 0.0) + c["postgres_cpu_s"] for c in recompute_cpu)
    window_cpu_per_s = (
        (cpu.get("server_cpu_s", 0.0) + cpu["postgres_cpu_s"]) / watched if watched else math.nan
    )
    log(
        f"flips: recomputeSegments({FLIP_SEGMENT}) over {seen} members: {[round(r, 2) for r in recomputes]} s"
    )

    p50, p99 = percentile(end_to_end, 50), percentile(end_to_end, 99)
    worst = max(end_to_end, default=math.nan)
    all_flipped = len(end_to_end) == count
    return {
        "members": count,
        "window_s": window,
        "margin_s": round(margin, 1),
        "setup_s": round(setup_done - setup_started, 2),
        "slack_s": round(slack, 2),
        "flipped": len(end_to_end),
        "logged": len(scheduler),
        "p50_s": secs(p50),
        "p99_s": secs(p99),
        "max_s": secs(worst),
        "min_s": secs(min(end_to_end, default=math.nan)),
        "log_p50_s": secs(percentile(scheduler, 50)),
        "log_p99_s": secs(percentile(scheduler, 99)),
        "log_max_s": secs(max(scheduler, default=math.nan)),
        "log_min_s": secs(min(scheduler, default=math.nan)),
        "early": sum(1 for v in end_to_end if v < 0),
        "entered_at_ingest": early_at_ingest,
        "duplicates": duplicates,
        "last_after_window_end_s": secs(last_arrival - (start + window)),
        "all_within_60s": all_flipped and worst <= GOAL_FLIP_MAX_S,
        "goal_met": all_flipped and worst <= GOAL_FLIP_MAX_S and p99 <= GOAL_FLIP_P99_S,
        "watch_s": round(watched, 2),
        "window_cpu": cpu,
        "window_cpu_per_s": round(window_cpu_per_s, 3),
        "idle_s": round(idle_s, 2),
        "idle_cpu_per_s": round(
            (idle_cpu.get("server_cpu_s", 0.0) + idle_cpu["postgres_cpu_s"]) / idle_s
            if idle_s > 0
            else math.nan,
            3,
        ),
        "recompute_members": seen,
        "recompute_s": round(recompute_s, 3),
        "recompute_runs_s": [round(r, 3) for r in recomputes],
        "recompute_cpu_s": round(recompute_cpu_s, 3),
        # CPU of one full rescan (one tick of a 1 s poller) over the CPU per second of the scheduler
        "ratio_poll_1s_tick": round(recompute_cpu_s / window_cpu_per_s, 1) if window_cpu_per_s else None,
        "errors": dict(sink.errors),
    }


async def change_log(ctx: Context) -> dict[str, float]:
    """When each member's ENTERED into the flip segment was logged (`segment_changes.at`), epoch s."""
    connection = await ctx.pg.connect(ctx.database)
    try:
        rows = await connection.fetch(
            """
            SELECT m.external_id, min(c.at) AS at
            FROM segment_changes c
            JOIN segments s ON s.id = c.segment_id
            JOIN members m ON m.id = c.member_id
            WHERE s.key = $1 AND c.change = 'ENTERED'
            GROUP BY m.external_id
            """,
            FLIP_SEGMENT,
        )
    finally:
        await connection.close()
    return {row["external_id"]: row["at"].timestamp() for row in rows}


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples and members (under a minute)")
    parser.add_argument("--samples", type=int, help="measured samples per level (default 200; --quick 30)")
    parser.add_argument("--warmup", type=int, help="warm-up samples per level (default 10; --quick 3)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="subscriber counts, ascending")
    parser.add_argument(
        "--flip-members", type=int, help="members crossing the edge (default 10,000; --quick 1,000)"
    )
    parser.add_argument(
        "--flip-window", type=float, help="seconds the due instants spread over (60; --quick 10)"
    )
    parser.add_argument(
        "--flip-margin", type=float, help="seconds from set-up start to the first due instant"
    )
    parser.add_argument("--flip-grace", type=float, help="seconds to wait after the window (60; --quick 15)")
    parser.add_argument(
        "--database-url", default=os.environ.get("LOYALTY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("LOYALTY_BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="server worker processes")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-flips", action="store_true")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    levels = tuple(int(v) for v in args.levels.split(","))
    options = Options(
        samples=args.samples if args.samples is not None else (30 if quick else 200),
        warmup=args.warmup if args.warmup is not None else (3 if quick else 10),
        levels=levels,
        flip_members=args.flip_members if args.flip_members is not None else (1000 if quick else 10_000),
        flip_window_s=args.flip_window if args.flip_window is not None else (10.0 if quick else 60.0),
        flip_margin_s=args.flip_margin,
        flip_grace_s=args.flip_grace if args.flip_grace is not None else (15.0 if quick else 60.0),
        database_url=args.database_url,
        redis_url=args.redis_url,
        workers=args.workers,
        quick=quick,
        skip_latency=args.skip_latency,
        skip_flips=args.skip_flips,
    )
    if options.samples < 1 or options.warmup < 0 or options.flip_members < 1 or options.flip_window_s <= 0:
        parser.error("--samples and --flip-members must be positive, --warmup not negative")
    if not levels or any(n < 1 for n in levels) or list(levels) != sorted(levels):
        parser.error("--levels: positive subscriber counts in ascending order")
    return options


async def run(options: Options) -> dict[str, Any]:
    limit = raise_fd_limit(2 * max(options.levels) + 1024)
    pg = PgServer.parse(options.database_url)
    run_id = secrets.token_hex(4)
    database, prefix = f"loyalty_bench_rt_{run_id}", f"bench:rt:{run_id}:"
    data_dir = Path(tempfile.mkdtemp(prefix=f"loyalty-bench-rt-{run_id}-"))
    busy = await machine_busy()
    log(
        f"database {database}, redis prefix {prefix}, {options.workers} worker(s), open files limit {limit}; "
        f"machine busy before the start: {busy:.2f} of {os.cpu_count()} cores"
    )
    figures: dict[str, Any] = {
        "bench": "realtime",
        "quick": options.quick,
        "workers": options.workers,
        "samples": options.samples,
        "warmup": options.warmup,
        "cores": os.cpu_count(),
        "busy_cores_before": round(busy, 2),
    }
    server: Server | None = None
    created = False
    try:
        url = await pg.create(database)
        created = True
        env = {
            **os.environ,
            "LOYALTY_DATABASE_URL": url,
            "LOYALTY_REDIS_URL": options.redis_url,
            "LOYALTY_REDIS_PREFIX": prefix,
            "LOYALTY_SECRET_KEY": secrets.token_urlsafe(48),
            "LOYALTY_DATA_DIR": str(data_dir),
        }
        server = start_server(env, options.workers, data_dir)
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as http:
            await wait_healthy(server, http)
            log(f"server up at {server.base_url} with {options.workers} worker(s)")
            ctx = Context(pg, database, env, server, http, run_id, options.redis_url, prefix)
            if not options.skip_latency:
                figures["latency"] = await latency(ctx, options)
            if not options.skip_flips:
                figures["flips"] = await flips(ctx, options)
        tail = server.tail(200)
        problems = [line for line in tail.splitlines() if "Traceback" in line or "ERROR" in line]
        figures["server_log_problems"] = problems[:10]
    finally:
        if server is not None:
            server.stop()
        if created:
            await pg.drop(database)
        await clear_redis(options.redis_url, prefix)
        shutil.rmtree(data_dir, ignore_errors=True)
        log(f"dropped {database}, cleared {prefix}*")
    lat, flip = figures.get("latency", {}), figures.get("flips", {})
    figures["checks_ok"] = (
        all(level["lost"] == 0 and level["baseline_lost"] == 0 for level in lat.get("levels", {}).values())
        and not lat.get("errors")
        and (not flip or (flip["flipped"] == flip["members"] and flip["early"] == 0 and flip["slack_s"] > 0))
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    figures = asyncio.run(run(options))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0 if figures["checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
