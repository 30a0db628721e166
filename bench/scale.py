"""Scale benchmark (issue 20): the multi-machine topology's parts, each side by side in one run.

"analytics load on the replica": a primary and its streaming replica of the bench's own
(tests/support/pg_replica.py: initdb, `pg_basebackup -R`, loopback ports) get the analytics
bench's program (members, events, aggregates, the `buyers` and `vip` segments with their change
log and memberships). The same analytics read load (segment reports over 30 days and overlaps,
`concurrency` in flight) then runs twice through the real service (`SegmentAnalytics`): once
without LOYALTY_DATABASE_REPLICA_URL (every read on the primary), once with it (the reads that may
lag on the replica). For each: the CPU seconds of the primary's and the replica's PostgreSQL
process trees, the wall time and the reports per second.
Usage: .venv/bin/python bench/scale.py [--quick] [--members N] [--events N] [--reports N]
The last line on stdout is one JSON object with the figures (`--quick`: under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import migrations
from bench.analytics import CHANGES_SQL, LEFT_SQL, MEMBERSHIPS_SQL, SEGMENTS_SQL
from bench.harness import log, run_concurrently, tree_cpu_s
from bench.segments import generate
from domain.analytics.segments import SegmentAnalytics
from domain.clock import SystemClock
from domain.db.engine import Database, create_engine, session_factory
from domain.db.replica import Replica
from tests.support.pg_replica import PgPair, missing

#: The reads a segment report runs side by side (SegmentAnalytics.report), and one before them.
PARTS = 6


async def analytics_on_replica(members: int, events: int, reports: int, concurrency: int) -> dict[str, Any]:
    """Primary CPU under one analytics read load, with every read on the primary, then with the
    replica taking the reads that may lag."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5k members, 25k events, 20 reports")
    parser.add_argument("--members", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--reports", type=int, help="analytics reads per phase")
    parser.add_argument("--concurrency", type=int, default=2, help="analytics reads in flight")
    args = parser.parse_args(argv)
    members = args.members or (5_000 if args.quick else 200_000)
    events = args.events or (25_000 if args.quick else 1_000_000)
    reports = args.reports or (20 if args.quick else 200)
    figures: dict[str, Any] = {"bench": "scale", "quick": args.quick}
    figures["analytics_on_replica"] = asyncio.run(
        analytics_on_replica(members, events, reports, args.concurrency)
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
