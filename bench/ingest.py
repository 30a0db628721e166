"""Ingest benchmark: `recordEvents` end to end over HTTP against a real server, next to a raw floor.

Three phases, each on its own fresh PostgreSQL database migrated with `migrations.upgrade`:

* end to end, fraud rules off, then end to end, fraud rules on (the defaults): `loyalty serve
  --workers W` in a subprocess; program and API key made with the CLI (the key also holds
  `fraud:configure`); for "rules off" every audit rule is switched off with `setFraudRule(enabled:
  false)` before the members go in; members upserted through `upsertMembers` (untimed); then the
  events go through `recordEvents` in batches, with C requests in flight (httpx). Request bodies
  are encoded before the clock starts. `audit_overhead` = (per-event time with rules - without) /
  per-event time with rules. "Rules off" still runs the auditor's fixed part (it loads the
  settings, claims the receipts and records the device uses whatever the rules say), so the
  overhead is what the rules add on top of that.
* floor: the same rows written straight with asyncpg, one transaction per batch, C connections in
  flight: the events INSERT ... ON CONFLICT DO NOTHING RETURNING id (`fetchmany`, asyncpg's
  executemany that returns rows), the ledger entries (`executemany`), the cached balance UPDATEs
  in member-id order (`executemany`) and the per member x type x day aggregate upserts
  (`executemany`): the writes the pipeline makes, without its reads (dedup lookup, member lookup,
  earning rules, API key), the audit, GraphQL, HTTP and ORM.

Fairness of the two end-to-end phases: the same events (same bodies, byte for byte), the same
member load as warmup, a fresh database and server each, a CHECKPOINT before each clock starts
(so a phase does not flush the previous one's dirty pages) and the previous phase's database
dropped first. The order is fixed, rules off first (`--rules-first` swaps it): whatever the
second phase still inherits from the first (a warmer or busier machine, a checkpoint) then counts
against the rules, the conservative direction for an overhead goal. Run-to-run noise on a shared
VM is larger than that effect; compare both orders when it matters.

Workload: POS-like purchases carry a unique `receiptId`, the member's `deviceId` and one of a few
dozen `cashierId`s; amounts spread log-normally around each member's own typical basket. Member
count and a 90-day spread of `occurredAt` keep rule trips rare (the amount outlier rule trips on a
few); the figures count HELD_FOR_REVIEW and BLOCKED events per phase and findings per rule.

When the PostgreSQL server runs with autovacuum off, the bench does autoanalyze's work itself
(see AutoAnalyze). The harness (server, databases, CPU accounting) is bench/harness.py; the
workload, the end-to-end phase and the floor here are reused by bench/pipeline.py.
Progress goes to stderr; the last line on stdout is one JSON object with the figures.
Usage: .venv/bin/python bench/ingest.py [--quick] [--events N] [--members N] [--batch N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` when run as a script

from bench.harness import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    DEFAULT_WORKERS,
    REPO,
    Api,
    AutoAnalyze,
    CpuMeter,
    PgServer,
    PhaseResult,
    Server,
    _children,
    _machine_busy_s,
    _pids_with,
    _proc_cpu_s,
    add_server_arguments,
    analyze,
    autovacuum_on,
    checkpoint,
    clear_redis,
    cli,
    free_port,
    graphql,
    log,
    run_concurrently,
    serving,
    start_server,
    wait_healthy,
)

#: The harness names the other benches imported from here before bench/harness.py existed stay
#: importable from here (new code imports them from bench.harness).
__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_REDIS_URL",
    "DEFAULT_WORKERS",
    "REPO",
    "CpuMeter",
    "PgServer",
    "Server",
    "_children",
    "_machine_busy_s",
    "_pids_with",
    "_proc_cpu_s",
    "clear_redis",
    "cli",
    "free_port",
    "graphql",
    "log",
    "start_server",
    "wait_healthy",
]

MEMBERS_PER_CALL = 1000
AMOUNT_UNITS_PER_CENT = 100  # domain.db.types: amounts are stored x 10^4
HISTORY = timedelta(days=90)
CASHIERS = 36
#: The audit rules (`non_compliant` is a tagging threshold, not a rule that judges events).
AUDIT_RULES = (
    "duplicate_receipt",
    "velocity",
    "single_accrual_cap",
    "daily_points_cap",
    "amount_outlier",
    "shared_device",
    "self_referral",
    "cashier_collusion",
)
API_KEY_SCOPES = "program:read,members:read,members:write,events:write,fraud:configure"

RECORD = (
    "mutation($events: [EventInput!]!) "
    "{ recordEvents(events: $events) { results { externalId status pointsAwarded message } } }"
)
UPSERT = "mutation($members: [MemberInput!]!) { upsertMembers(members: $members) { upserted } }"
SET_RULE = "mutation($rule: String!) { setFraudRule(rule: $rule, enabled: false) { name enabled } }"
RULES = "{ fraudRules { name enabled shadow } }"


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class BenchEvent:
    external_id: str
    member: int  # index into the member list
    type: str
    occurred_at: datetime
    amount_cents: int | None
    properties: dict[str, Any]

    @property
    def amount_text(self) -> str | None:
        if self.amount_cents is None:
            return None
        return f"{self.amount_cents // 100}.{self.amount_cents % 100:02d}"

    @property
    def points(self) -> int:
        """The default earning rules: purchase 1 point per whole unit, visit 10, login 0."""
        if self.type == "purchase":
            return (self.amount_cents or 0) // 100
        return 10 if self.type == "visit" else 0


@dataclass(frozen=True)
class Workload:
    events: int
    members: int
    batch: int
    run_id: str
    now: datetime
    #: "stream": occurredAt follows the event order over the `history` (90 days), with a few
    #: minutes of jitter (a POS feed replayed in order); "random": spread at random over it (a
    #: backfill: every batch touches the whole history of its members).
    times: str = "stream"
    history: timedelta = HISTORY
    seed: int = 20_240_601

    @property
    def batches(self) -> int:
        return math.ceil(self.events / self.batch)

    def member_id(self, index: int) -> str:
        return f"m{index:07d}"

    @cached_property
    def typical_cents(self) -> list[float]:
        """Each member's typical basket: log-normal around 35.00 across members."""
        rng = random.Random(self.seed - 1)
        return [rng.lognormvariate(math.log(3_500), 0.6) for _ in range(self.members)]

    def batch_events(self, number: int) -> list[BenchEvent]:
        """Batch `number`, the same on every call: every phase writes exactly the same events."""
        rng = random.Random(self.seed * 1_000_003 + number)
        first = number * self.batch
        out: list[BenchEvent] = []
        frequent = max(1, self.members // 10)
        typical = self.typical_cents
        for i in range(first, min(first + self.batch, self.events)):
            # a tenth of the members (the regulars) produce about 37% of the events
            member = rng.randrange(frequent) if rng.random() < 0.3 else rng.randrange(self.members)
            span = self.history.total_seconds()
            if self.times == "stream":
                back = span * (1 - (i + 0.5) / self.events) + rng.uniform(60, 300)
            else:
                back = rng.uniform(60, span)
            occurred_at = self.now - timedelta(seconds=back)
            occurred_at = occurred_at.replace(microsecond=occurred_at.microsecond // 1000 * 1000)
            store = f"s{rng.randrange(250):03d}"
            roll = rng.random()
            if roll < 0.80:
                cents = max(50, min(250_000, int(typical[member] * rng.lognormvariate(0, 0.5))))
                kind, amount = "purchase", cents
                properties: dict[str, Any] = {
                    "storeId": store,
                    "channel": rng.choice(("pos", "pos", "web", "app")),
                    "items": rng.randint(1, 8),
                    "receiptId": f"{store}-{i:09d}",
                    "deviceId": f"d{member:07d}",
                    "cashierId": f"k{rng.randrange(CASHIERS):02d}",
                }
            elif roll < 0.92:
                kind, amount, properties = "visit", None, {"storeId": store}
            else:
                kind, amount, properties = "login", None, {"channel": rng.choice(("web", "app"))}
            out.append(BenchEvent(f"ev-{self.run_id}-{i:08d}", member, kind, occurred_at, amount, properties))
        return out

    def all_batches(self) -> Iterator[list[BenchEvent]]:
        for number in range(self.batches):
            yield self.batch_events(number)

    def member_inputs(self, start: int, stop: int) -> list[dict[str, Any]]:
        rng = random.Random(self.seed + start)
        return [
            {
                "externalId": self.member_id(i),
                "attributes": {"tier": rng.choice(("bronze", "silver", "gold")), "city": f"c{i % 40:02d}"},
                "channels": ["EMAIL"] if i % 3 else ["EMAIL", "SMS"],
                "joinedAt": (self.now - timedelta(days=90 + i % 700)).isoformat(),
            }
            for i in range(start, stop)
        ]


@dataclass(frozen=True)
class Totals:
    events: int
    ledger_entries: int
    ledger_points: int
    balances: int
    aggregate_count: int
    aggregate_buckets: int


async def totals(pg: PgServer, name: str) -> Totals:
    connection = await pg.connect(name)
    try:
        row = await connection.fetchrow(
            """
            SELECT (SELECT count(*) FROM events),
                   (SELECT count(*) FROM ledger_entries),
                   (SELECT coalesce(sum(points), 0) FROM ledger_entries),
                   (SELECT coalesce(sum(points_balance), 0) FROM members),
                   (SELECT coalesce(sum(count), 0) FROM event_aggregates),
                   (SELECT count(*) FROM event_aggregates)
            """
        )
    finally:
        await connection.close()
    return Totals(*(int(v) for v in row))


@dataclass(frozen=True)
class AuditTotals:
    """What the audit left behind: posted and held points, and its findings per rule and verdict."""

    posted_points: int
    pending_points: int
    pending_balances: int
    findings: dict[str, int]
    receipts: int
    device_uses: int


async def audit_totals(pg: PgServer, name: str) -> AuditTotals:
    connection = await pg.connect(name)
    try:
        row = await connection.fetchrow(
            """
            SELECT (SELECT coalesce(sum(points), 0) FROM ledger_entries WHERE status = 'POSTED'),
                   (SELECT coalesce(sum(points), 0) FROM ledger_entries WHERE status = 'PENDING_REVIEW'),
                   (SELECT coalesce(sum(pending_points), 0) FROM members),
                   (SELECT count(*) FROM fraud_receipts),
                   (SELECT count(*) FROM fraud_devices)
            """
        )
        findings = await connection.fetch(
            "SELECT rule, verdict, shadow, count(*) FROM fraud_findings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    finally:
        await connection.close()
    return AuditTotals(
        int(row[0]),
        int(row[1]),
        int(row[2]),
        {f"{rule} {verdict}{' shadow' if shadow else ''}": int(n) for rule, verdict, shadow, n in findings},
        int(row[3]),
        int(row[4]),
    )


def encode_batch(events: Sequence[BenchEvent], workload: Workload) -> bytes:
    items = []
    for e in events:
        item: dict[str, Any] = {
            "externalId": e.external_id,
            "memberExternalId": workload.member_id(e.member),
            "type": e.type,
            "occurredAt": e.occurred_at.isoformat(),
            "properties": e.properties,
        }
        if e.amount_cents is not None:
            item["amount"] = e.amount_text
        items.append(item)
    return orjson.dumps({"query": RECORD, "variables": {"events": items}})


#: Work done on the running server after the members went in and before the clock starts
#: (e.g. bench/pipeline.py's segments); returns set-up figures.
Prepare = Callable[[Api], Awaitable[dict[str, Any]]]
#: Wrapped around the timed part, given the server (e.g. a profiler attached to its processes).
Around = Callable[[Server], AbstractAsyncContextManager[None]]


async def end_to_end(
    pg: PgServer,
    database: str,
    redis_url: str,
    workload: Workload,
    workers: int,
    concurrency: int,
    emulate_autoanalyze: bool,
    rules: bool,
    *,
    label: str | None = None,
    scopes: str = API_KEY_SCOPES,
    prepare: Prepare | None = None,
    around: Around | None = None,
) -> tuple[PhaseResult, dict[str, Any]]:
    """One end-to-end phase; `rules` False switches every audit rule off before the members go in."""
    label = label or ("rules on" if rules else "rules off")
    redis_label = label.replace(" ", "-")
    async with serving(
        pg,
        database,
        redis_url,
        workload.run_id,
        redis_label,
        workers=workers,
        concurrency=concurrency,
        scopes=scopes,
    ) as api:
        await configure_rules(api, rules)
        setup: dict[str, Any] = await upsert_members(api, workload, concurrency)
        if prepare is not None:
            setup.update(await prepare(api))
        if emulate_autoanalyze:
            await analyze(pg, database)  # what autovacuum does after the member load

        started = time.perf_counter()
        bodies: list[bytes] = []
        sizes: list[int] = []
        expected_points = 0
        for events in workload.all_batches():
            bodies.append(encode_batch(events, workload))
            sizes.append(len(events))
            expected_points += sum(e.points for e in events)
        setup["encode_s"] = round(time.perf_counter() - started, 2)
        log(f"{len(bodies)} request bodies encoded ({sum(map(len, bodies)) / 1e6:.0f} MB)")
        await checkpoint(pg, database)
        result = PhaseResult(events=workload.events, seconds=0.0, expected_points=expected_points)

        async def send(number: int) -> float:
            t0 = time.perf_counter()
            data = await graphql(api.http, api.endpoint, api.headers, bodies[number])
            elapsed = (time.perf_counter() - t0) * 1000
            count_outcomes(result, data, sizes[number], number)
            return elapsed

        autoanalyze = AutoAnalyze(pg, database)
        if emulate_autoanalyze:
            autoanalyze.start()
        try:
            async with around(api.server) if around is not None else contextlib.nullcontext():
                meter = CpuMeter(api.server.process.pid, database)
                result.seconds, result.latencies_ms = await run_concurrently(
                    workload.batches, concurrency, send, f"recordEvents ({label})"
                )
                result.cpu = meter.stop()
        finally:
            setup.update(await autoanalyze.stop())
    return result, setup


def count_outcomes(result: PhaseResult, data: dict[str, Any], size: int, number: int) -> None:
    """Add one `recordEvents` answer's statuses and points to `result` (its size checked)."""
    outcomes = data["recordEvents"]["results"]
    if len(outcomes) != size:
        raise RuntimeError(f"batch {number}: {len(outcomes)} results for {size} events")
    for outcome in outcomes:
        result.statuses[outcome["status"]] += 1
        result.points += outcome["pointsAwarded"]


async def configure_rules(api: Api, rules: bool) -> None:
    """Leave the defaults (all rules on) or switch every audit rule off; then check what is set."""
    if not rules:
        for rule in AUDIT_RULES:
            await api.call(SET_RULE, {"rule": rule})
    data = await api.call(RULES)
    state = {r["name"]: r["enabled"] and not r["shadow"] for r in data["fraudRules"]}
    wrong = [rule for rule in AUDIT_RULES if state.get(rule) is not rules]
    if wrong:
        raise RuntimeError(f"fraud rules not {'on' if rules else 'off'}: {wrong}")


async def upsert_members(api: Api, workload: Workload, concurrency: int) -> dict[str, Any]:
    calls = math.ceil(workload.members / MEMBERS_PER_CALL)

    async def call(number: int) -> float:
        start = number * MEMBERS_PER_CALL
        members = workload.member_inputs(start, min(start + MEMBERS_PER_CALL, workload.members))
        data = await api.call(UPSERT, {"members": members})
        if data["upsertMembers"]["upserted"] != len(members):
            raise RuntimeError(f"upsertMembers: {data} for {len(members)} members")
        return 0.0

    seconds, _ = await run_concurrently(calls, concurrency, call, "upsertMembers")
    log(f"{workload.members} members upserted in {seconds:.1f}s ({workload.members / seconds:.0f}/s)")
    return {"members_upsert_s": round(seconds, 2)}


# --------------------------------------------------------------------------------------- floor

INSERT_EVENTS = """
INSERT INTO events (program_id, external_id, member_id, type, occurred_at, amount, properties,
                    status, points_awarded, message, content_hash, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'ACCEPTED', $8, NULL, $9, $10)
ON CONFLICT (program_id, external_id) DO NOTHING
RETURNING id, external_id
"""
INSERT_LEDGER = """
INSERT INTO ledger_entries (program_id, member_id, points, status, kind, reason, event_id,
                            idempotency_key, request_hash, created_at)
VALUES ($1, $2, $3, 'POSTED', 'ACCRUAL', $4, $5, $6, $7, $8)
"""
UPDATE_BALANCE = """
UPDATE members SET points_balance = points_balance + $2, pending_points = pending_points + 0
WHERE id = $1
"""
UPSERT_AGGREGATE = """
INSERT INTO event_aggregates (member_id, event_type, day, program_id, count, amount_sum, amount_min,
                              amount_max, first_at, last_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (member_id, event_type, day, program_id) DO UPDATE SET
    count = event_aggregates.count + excluded.count,
    amount_sum = event_aggregates.amount_sum + excluded.amount_sum,
    amount_min = least(event_aggregates.amount_min, excluded.amount_min),
    amount_max = greatest(event_aggregates.amount_max, excluded.amount_max),
    first_at = least(event_aggregates.first_at, excluded.first_at),
    last_at = greatest(event_aggregates.last_at, excluded.last_at)
"""


@dataclass
class FloorBatch:
    """One batch's rows in the order the pipeline writes them; the ledger rows wait for event ids."""

    events: list[tuple[Any, ...]]
    ledger: dict[str, tuple[Any, ...]]  # external_id -> row without event_id
    balances: list[tuple[int, int]]
    aggregates: list[tuple[Any, ...]]


def floor_batch(
    events: Sequence[BenchEvent], program_id: int, member_ids: Sequence[int], now: datetime
) -> FloorBatch:
    event_rows: list[tuple[Any, ...]] = []
    ledger: dict[str, tuple[Any, ...]] = {}
    posted: Counter[int] = Counter()
    buckets: dict[tuple[int, str, date], list[Any]] = {}
    for e in sorted(events, key=lambda e: e.external_id):
        member_id = member_ids[e.member]
        units = None if e.amount_cents is None else e.amount_cents * AMOUNT_UNITS_PER_CENT
        properties = orjson.dumps(e.properties, option=orjson.OPT_SORT_KEYS).decode()
        content_hash = hashlib.sha256(f"{e.external_id}\x00{properties}".encode()).hexdigest()
        event_rows.append(
            (
                program_id,
                e.external_id,
                member_id,
                e.type,
                e.occurred_at,
                units,
                properties,
                e.points,
                content_hash,
                now,
            )
        )
        if e.points:
            ledger[e.external_id] = (
                program_id,
                member_id,
                e.points,
                f"{e.type} {e.external_id}",
                f"event:{e.external_id}",
                hashlib.sha256(f"ACCRUAL\x00{content_hash}".encode()).hexdigest(),
                now,
            )
            posted[member_id] += e.points
        key = (member_id, e.type, e.occurred_at.date())
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [1, units or 0, units, units, e.occurred_at, e.occurred_at]
        else:
            bucket[0] += 1
            if units is not None:
                bucket[1] += units
                bucket[2] = units if bucket[2] is None else min(bucket[2], units)
                bucket[3] = units if bucket[3] is None else max(bucket[3], units)
            bucket[4] = min(bucket[4], e.occurred_at)
            bucket[5] = max(bucket[5], e.occurred_at)
    return FloorBatch(
        event_rows,
        ledger,
        sorted(posted.items()),
        [(m, t, d, program_id, *b) for (m, t, d), b in sorted(buckets.items())],
    )


async def floor(
    pg: PgServer, database: str, workload: Workload, concurrency: int, emulate_autoanalyze: bool
) -> tuple[PhaseResult, dict[str, float]]:
    await pg.create(database)
    now = datetime.now(UTC)
    setup_conn = await pg.connect(database)
    try:
        program_id: int = await setup_conn.fetchval(
            "INSERT INTO programs (key, name, kind, settings, created_at) "
            "VALUES ('bench', 'Bench', 'B2C', '{}'::jsonb, $1) RETURNING id",
            now,
        )
        started = time.perf_counter()
        await setup_conn.copy_records_to_table(
            "members",
            columns=[
                "program_id",
                "external_id",
                "kind",
                "attributes",
                "channels",
                "joined_at",
                "created_at",
                "updated_at",
                "points_balance",
                "pending_points",
            ],
            records=(
                (
                    program_id,
                    workload.member_id(i),
                    "CUSTOMER",
                    '{"tier": "silver"}',
                    '["EMAIL"]',
                    now,
                    now,
                    now,
                    0,
                    0,
                )
                for i in range(workload.members)
            ),
        )
        ids = dict(await setup_conn.fetch("SELECT external_id, id FROM members"))
        member_ids = [int(ids[workload.member_id(i)]) for i in range(workload.members)]
        if emulate_autoanalyze:
            await setup_conn.execute("ANALYZE")
        log(f"floor: {workload.members} members copied in {time.perf_counter() - started:.1f}s")
    finally:
        await setup_conn.close()

    started = time.perf_counter()
    batches = [floor_batch(events, program_id, member_ids, now) for events in workload.all_batches()]
    setup = {"floor_prepare_s": round(time.perf_counter() - started, 2)}
    log(f"floor: {len(batches)} batches of rows prepared in {setup['floor_prepare_s']}s")

    pool = await asyncpg.create_pool(
        host=pg.url.host or "127.0.0.1",
        port=pg.url.port or 5432,
        user=pg.url.username or "postgres",
        password=pg.url.password,
        database=database,
        min_size=concurrency,
        max_size=concurrency,
    )
    result = PhaseResult(events=workload.events, seconds=0.0)
    try:

        async def write(number: int) -> float:
            batch = batches[number]
            t0 = time.perf_counter()
            async with pool.acquire() as connection, connection.transaction():
                inserted = await connection.fetchmany(INSERT_EVENTS, batch.events)
                ledger = [
                    (*row[:4], event_id, *row[4:])
                    for event_id, external_id in inserted
                    if (row := batch.ledger.get(external_id)) is not None
                ]
                if ledger:
                    await connection.executemany(INSERT_LEDGER, ledger)
                if batch.balances:
                    await connection.executemany(UPDATE_BALANCE, batch.balances)
                await connection.executemany(UPSERT_AGGREGATE, batch.aggregates)
            result.statuses["ACCEPTED"] += len(inserted)
            result.points += sum(points for _, points in batch.balances)
            return (time.perf_counter() - t0) * 1000

        await checkpoint(pg, database)
        meter = CpuMeter(None, database)
        result.seconds, result.latencies_ms = await run_concurrently(
            workload.batches, concurrency, write, "floor"
        )
        result.cpu = meter.stop()
    finally:
        await pool.close()
    return result, setup


# ---------------------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Options:
    events: int
    members: int
    batch: int
    database_url: str
    redis_url: str
    workers: int
    concurrency: int
    quick: bool
    skip_floor: bool
    analyze: str
    rules: str
    rules_first: bool
    times: str


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--events", type=int, help="events to record (default 1,000,000; --quick 20,000)")
    parser.add_argument("--members", type=int, help="members (default 100,000; --quick 2,000)")
    add_server_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="20k events / 2k members, same code path")
    parser.add_argument("--skip-floor", action="store_true", help="end to end only (for profiling)")
    parser.add_argument(
        "--rules",
        choices=("both", "on", "off"),
        default="both",
        help="end-to-end phases: with and without the fraud rules (both), or only one of them",
    )
    parser.add_argument("--rules-first", action="store_true", help="run the rules-on phase first")
    parser.add_argument(
        "--times",
        choices=("stream", "random"),
        default="stream",
        help="occurredAt in event order over 90 days (stream) or at random in them (random: a backfill)",
    )
    parser.add_argument(
        "--analyze",
        choices=("auto", "on", "off"),
        default="auto",
        help="emulate autovacuum's ANALYZEs: auto = only when the server's autovacuum is off",
    )
    args = parser.parse_args(argv)
    events = args.events if args.events is not None else (20_000 if args.quick else 1_000_000)
    members = args.members if args.members is not None else (2_000 if args.quick else 100_000)
    if events < 1 or members < 1 or not 1 <= args.batch <= 1000:
        parser.error("--events and --members must be positive, --batch between 1 and 1000")
    if args.workers < 1 or args.concurrency < 1:
        parser.error("--workers and --concurrency must be positive")
    return Options(
        events,
        members,
        args.batch,
        args.database_url,
        args.redis_url,
        args.workers,
        args.concurrency,
        args.quick,
        args.skip_floor,
        args.analyze,
        args.rules,
        args.rules_first,
        args.times,
    )


def phase_figures(result: PhaseResult) -> dict[str, Any]:
    return {
        "seconds": round(result.seconds, 2),
        "events_per_s": round(result.per_s),
        "p50_ms": round(result.percentile(50), 1),
        "p99_ms": round(result.percentile(99), 1),
        "statuses": dict(result.statuses),
        "cpu": result.cpu,
    }


def phase_checks(
    result: PhaseResult, workload: Workload, stored: Totals, audit: AuditTotals
) -> dict[str, bool]:
    """Every event stored once; accepted ones earned and aggregated; held points pending, not posted."""
    accepted = result.statuses.get("ACCEPTED", 0)
    judged = accepted + result.statuses.get("HELD_FOR_REVIEW", 0) + result.statuses.get("BLOCKED", 0)
    return {
        "all_judged": judged == workload.events,
        "points": result.points == audit.posted_points == stored.balances,
        "ledger": stored.ledger_points == result.expected_points,
        "pending": audit.pending_points == audit.pending_balances,
        "events_stored": stored.events == workload.events,
        "aggregates": stored.aggregate_count == accepted,
    }


async def run(options: Options) -> dict[str, Any]:
    pg = PgServer.parse(options.database_url)
    run_id = secrets.token_hex(4)
    workload = Workload(
        options.events, options.members, options.batch, run_id, datetime.now(UTC), options.times
    )
    databases = {
        "off": f"loyalty_bench_{run_id}_rules_off",
        "on": f"loyalty_bench_{run_id}_rules_on",
        "floor": f"loyalty_bench_{run_id}_floor",
    }
    order = ["off", "on"] if options.rules == "both" else [options.rules]
    if options.rules_first:
        order.reverse()
    log(
        f"{workload.events} events, {workload.members} members, batches of {workload.batch}; "
        f"{options.workers} server worker(s), {options.concurrency} in flight; "
        f"end to end with rules {' then '.join(order)}; databases {', '.join(databases.values())}"
    )
    if options.analyze == "auto":
        emulate = not await autovacuum_on(pg)
        if emulate:
            log("autovacuum is off on this server: the bench runs autoanalyze's ANALYZEs itself")
    else:
        emulate = options.analyze == "on"
    created: list[str] = []
    results: dict[str, PhaseResult] = {}
    stored: dict[str, Totals] = {}
    audits: dict[str, AuditTotals] = {}
    setup: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    try:
        for phase in order:
            database = databases[phase]
            created.append(database)
            result, phase_setup = await end_to_end(
                pg,
                database,
                options.redis_url,
                workload,
                options.workers,
                options.concurrency,
                emulate,
                rules=phase == "on",
            )
            log(
                f"rules {phase}: {result.per_s:,.0f} events/s ({result.seconds:.1f}s), "
                f"p50 {result.percentile(50):.0f} ms, p99 {result.percentile(99):.0f} ms, "
                f"statuses {dict(result.statuses)}, cpu {result.cpu}"
            )
            results[phase], stored[phase] = result, await totals(pg, database)
            audits[phase] = await audit_totals(pg, database)
            log(f"rules {phase}: findings {audits[phase].findings}")
            checks.update(
                {
                    f"{name}_rules_{phase}": ok
                    for name, ok in phase_checks(result, workload, stored[phase], audits[phase]).items()
                }
            )
            setup.update({f"{name}_rules_{phase}": value for name, value in phase_setup.items()})
            await pg.drop(database)  # the next phase starts without this one's files around
        if "off" in results:
            checks["rules_off_all_accepted"] = results["off"].statuses.get("ACCEPTED", 0) == workload.events
        floor_result: PhaseResult | None = None
        if not options.skip_floor:
            created.append(databases["floor"])
            floor_result, floor_setup = await floor(
                pg, databases["floor"], workload, options.concurrency, emulate
            )
            setup.update(floor_setup)
            log(
                f"floor: {floor_result.per_s:,.0f} events/s ({floor_result.seconds:.1f}s), "
                f"p50 {floor_result.percentile(50):.0f} ms, p99 {floor_result.percentile(99):.0f} ms, "
                f"cpu {floor_result.cpu}"
            )
            floor_totals = await totals(pg, databases["floor"])
            if "off" in stored:  # every event accepted: the floor writes exactly the same rows
                checks["floor_same_rows"] = floor_totals == stored["off"]
                if floor_totals != stored["off"]:
                    log(f"floor rows differ: end to end {stored['off']}, floor {floor_totals}")
        if not all(checks.values()):
            log(f"CHECK FAILED: {[name for name, ok in checks.items() if not ok]}; totals {stored}")
    finally:
        for name in created:
            await pg.drop(name)
        log(f"dropped {', '.join(created) or 'nothing'}")

    main_phase = "on" if "on" in results else "off"  # the shipped configuration when it ran
    e2e = results[main_phase]
    figures: dict[str, Any] = {
        "bench": "ingest",
        "quick": options.quick,
        "events": workload.events,
        "members": workload.members,
        "batch": workload.batch,
        "workers": options.workers,
        "concurrency": options.concurrency,
        "autoanalyze_emulated": emulate,
        "times": options.times,
        "phases": order,
        "rules": main_phase,
        **phase_figures(e2e),
        "baseline_per_s": round(floor_result.per_s) if floor_result else None,
        "baseline_p50_ms": round(floor_result.percentile(50), 1) if floor_result else None,
        "baseline_p99_ms": round(floor_result.percentile(99), 1) if floor_result else None,
        "ratio": round(floor_result.per_s / e2e.per_s, 2) if floor_result and e2e.per_s else None,
        "ledger_entries": stored[main_phase].ledger_entries,
        "aggregate_buckets": stored[main_phase].aggregate_buckets,
        "checks_ok": all(checks.values()),
        "baseline_cpu": floor_result.cpu if floor_result else None,
    }
    if "on" in results and "off" in results:
        on, off = results["on"], results["off"]
        figures["events_per_s_with_rules"] = round(on.per_s)
        figures["events_per_s_without_rules"] = round(off.per_s)
        figures["audit_overhead"] = round((on.seconds - off.seconds) / on.seconds, 3)
        busy_on = on.cpu.get("server_cpu_s", 0.0) + on.cpu["postgres_cpu_s"]
        busy_off = off.cpu.get("server_cpu_s", 0.0) + off.cpu["postgres_cpu_s"]
        figures["audit_cpu_overhead"] = round((busy_on - busy_off) / busy_on, 3) if busy_on else None
        figures["without_rules"] = phase_figures(off)
    for phase in results:
        audit = audits[phase]
        figures[f"audit_rules_{phase}"] = {
            "held": results[phase].statuses.get("HELD_FOR_REVIEW", 0),
            "blocked": results[phase].statuses.get("BLOCKED", 0),
            "findings": audit.findings,
            "pending_points": audit.pending_points,
            "receipts": audit.receipts,
            "device_uses": audit.device_uses,
        }
    figures.update(setup)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    figures = asyncio.run(run(options))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0 if figures["checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
