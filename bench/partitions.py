"""bench/scale.py's partitioned-history comparisons: two fresh databases on one PostgreSQL server, one at
the newest revision (events and segment_changes partitioned by month, the `event_keys` claim), one
downgraded to 0017 (plain tables), loaded alike (bench/segments.py's `generate`: members, events over
120 days, aggregates), their months' partitions created first so that no row waits in DEFAULT.

* ingest: the same batches of new events (bench/segments.py's `ingest_drafts`, spread over the 120
  days) through the real pipeline (`EventService.record_events`, AllowAll auditor, no segments, no
  HTTP: the storage is the larger share), sides alternating round by round; events/s per side.
* prune: one more month of purchases (a quarter of the loaded events' count, seven months back, the
  same rows on both sides, through the claim trigger on the partitioned side) goes, on the plain side
  by one `DELETE ... WHERE occurred_at <` (then the `VACUUM` that makes the space reusable), on the
  partitioned side by `EventPartitionPruner` (DETACH and DROP of its partition); seconds per side.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

import migrations
from bench.harness import DEFAULT_DATABASE_URL, PgServer, log
from bench.segments import generate, ingest, ingest_drafts
from domain.audit import AllowAll
from domain.clock import SystemClock
from domain.db.engine import Database, create_engine
from domain.db.partitions import add_months, ensure_months, month_start
from domain.events.service import EventService
from domain.ops.event_retention import EventPartitionPruner

#: How many days back `generate` and `ingest_drafts` spread events (bench/segments.py).
HISTORY_MONTHS = 5


@dataclass(frozen=True)
class Side:
    name: str
    url: str
    program_id: int


@asynccontextmanager
async def two_databases(options: argparse.Namespace) -> AsyncIterator[tuple[Side, Side]]:
    """(plain, partitioned), loaded alike; dropped afterwards."""
    server = PgServer.parse(getattr(options, "database_url", None) or DEFAULT_DATABASE_URL)
    names = [f"bench_scale_{name}_{int(time.time())}" for name in ("plain", "partitioned")]
    now = datetime.now(UTC).replace(microsecond=0)
    sides = []
    try:
        for name, database in zip(("plain", "partitioned"), names, strict=True):
            url = await server.create(database)
            if name == "plain":
                await _run_sync(migrations.downgrade, url, "0017")
            else:
                await _months(url, add_months(month_start(now), -HISTORY_MONTHS), HISTORY_MONTHS)
            connection = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                program_id, _ = await generate(
                    connection, options.partition_members, options.partition_events, now, ledger=False
                )
                if name == "partitioned":  # generate's bulk load runs without triggers: claim its keys
                    await connection.execute(
                        "INSERT INTO event_keys SELECT program_id, external_id, occurred_at FROM events "
                        "ON CONFLICT DO NOTHING"
                    )
                await connection.execute("ANALYZE")
            finally:
                await connection.close()
            sides.append(Side(name, url, program_id))
        log(f"partitions: two databases loaded ({options.partition_events:,} events each)")
        yield sides[0], sides[1]
    finally:
        for database in names:
            await server.drop(database)


async def _run_sync(function: Any, *arguments: Any) -> None:
    await asyncio.to_thread(function, *arguments)


async def _months(url: str, first: datetime, ahead: int) -> None:
    """The partitions of the bench's months from `first` on (those the migration did not create)."""
    db = Database(create_engine(url, pool_size=1))
    try:
        async with db.unit_of_work() as uow:
            await ensure_months(uow.session, first, ahead)
    finally:
        await db.dispose()


async def compare_partition_ingest(options: argparse.Namespace) -> dict[str, Any]:
    """The same new events through the pipeline into plain and into partitioned tables."""
    rounds, count = options.partition_rounds, options.partition_ingest
    async with two_databases(options) as (plain, partitioned):
        figures: dict[str, Any] = {"events_loaded": options.partition_events, "rounds": rounds}
        seconds = {plain.name: 0.0, partitioned.name: 0.0}
        now = datetime.now(UTC)
        for number in range(rounds):
            for side in (plain, partitioned) if number % 2 == 0 else (partitioned, plain):
                rng = random.Random(number)  # the same events on both sides
                drafts = ingest_drafts(rng, options.partition_members, count, f"r{number}", now)
                db = Database(create_engine(side.url, pool_size=2))
                try:
                    seconds[side.name] += await ingest(
                        EventService(db, SystemClock(), AllowAll()), side.program_id, drafts, 500
                    )
                finally:
                    await db.dispose()
        for name, spent in seconds.items():
            figures[name] = {
                "events": rounds * count,
                "seconds": round(spent, 2),
                "events_per_s": round(rounds * count / spent),
            }
            log(f"partitions ingest, {name}: {figures[name]}")
        figures["partitioned_vs_plain"] = round(
            figures["partitioned"]["events_per_s"] / figures["plain"]["events_per_s"], 2
        )
        return figures


#: One month of purchases, old enough to be outside `generate`'s 120 days: $1 program, $2 the month's
#: start, $3 its hours, $4 the first member id, $5 members, $6 rows.
OLD_MONTH_SQL = """
INSERT INTO events (program_id, external_id, member_id, type, occurred_at, amount, properties,
                    status, points_awarded, message, content_hash, received_at)
SELECT $1, 'old-' || g, $4::bigint + g % $5, 'purchase', $2::timestamptz + (g % $3) * interval '1 hour',
       10000 + g % 500000, '{}'::jsonb, 'ACCEPTED', 1 + g % 50, NULL, md5(g::text),
       $2::timestamptz + (g % $3) * interval '1 hour'
FROM generate_series(0, $6 - 1) g
"""


async def compare_event_prune(options: argparse.Namespace) -> dict[str, Any]:
    """A month of events, loaded alike on both sides, goes: DELETE (then VACUUM) on the plain tables, a
    partition DETACH and DROP (`EventPartitionPruner`) on the partitioned ones."""
    now = datetime.now(UTC)
    month = add_months(month_start(now), -(HISTORY_MONTHS + 2))
    following = add_months(month, 1)
    rows = options.partition_events // 4
    async with two_databases(options) as (plain, partitioned):
        figures: dict[str, Any] = {"month": month.isoformat(), "rows": rows}
        for side in (plain, partitioned):
            if side is partitioned:
                await _months(side.url, month, 0)
            figures[side.name] = {"load_s": await _load_month(side, month, following, rows)}
        connection = await asyncpg.connect(plain.url.replace("+asyncpg", ""))
        try:
            started = time.perf_counter()
            deleted = await connection.execute("DELETE FROM events WHERE occurred_at < $1", following)
            figures["plain"]["delete_s"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            await connection.execute("VACUUM events")
            figures["plain"]["vacuum_s"] = round(time.perf_counter() - started, 3)
            figures["plain"]["rows_gone"] = int(deleted.split()[-1])
        finally:
            await connection.close()
        db = Database(create_engine(partitioned.url, pool_size=1))
        try:
            started = time.perf_counter()
            retention = (now - following).days  # `boundary(now, retention)` is the month's end
            pruned = await EventPartitionPruner(db, SystemClock()).run(retention, [], dry_run=False)
            figures["partitioned"]["drop_s"] = round(time.perf_counter() - started, 3)
            figures["partitioned"]["rows_gone"] = sum(d.rows for d in pruned.dropped) + pruned.default_rows
            figures["partitioned"]["partitions_dropped"] = [d.partition for d in pruned.dropped]
        finally:
            await db.dispose()
        drop_s = figures["partitioned"]["drop_s"]
        figures["delete_vs_drop"] = round(figures["plain"]["delete_s"] / drop_s, 1) if drop_s else None
        log(f"partitions prune: {figures}")
        return figures


async def _load_month(side: Side, month: datetime, following: datetime, rows: int) -> float:
    """The month's events, through the claim trigger where there is one; seconds."""
    connection = await asyncpg.connect(side.url.replace("+asyncpg", ""))
    try:
        first, members = await connection.fetchrow(
            "SELECT min(id), count(*) FROM members WHERE program_id = $1", side.program_id
        )
        hours = int((following - month).total_seconds() // 3600)
        started = time.perf_counter()
        await connection.execute(OLD_MONTH_SQL, side.program_id, month, hours, first, members, rows)
        return round(time.perf_counter() - started, 2)
    finally:
        await connection.close()
