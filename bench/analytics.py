"""Analytics benchmark: segmentAnalytics and segmentOverlap on a large program, next to a floor.

A fresh PostgreSQL database gets the segments benchmark's members, events and aggregates
(`bench.segments.generate`), then two segments written straight in SQL: `buyers` (half the
members) and `vip` (a third), each member's entry spread over the last 90 days in the change
log, a tenth of the buyers leaving again, and a welcome message per entry. The 365-day report is timed
once on these unrecorded rows (every figure probed, as before migration 0011), then the history
is recorded (`fill_conversions`, as the migration does) and the report for a 30-day and a
365-day range and the overlap are timed through the real service (`SegmentAnalytics`), each
next to a floor in the same run: one `count(*)` over the segment's memberships, the least any
report must read. Goal (issue 7): every analytics query under 2 s at 1M members.
Usage: .venv/bin/python bench/analytics.py [--quick] [--members N] [--events N]
The last line on stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import migrations
from bench.segments import generate, log
from domain.analytics.recording import fill_conversions
from domain.analytics.segments import SegmentAnalytics
from domain.db.engine import Database, create_engine

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
FLOOR_SQL = "SELECT count(*) FROM segment_memberships WHERE segment_id = $1"
SEGMENTS_SQL = """
INSERT INTO segments (program_id, key, name, kind, condition, created_at, updated_at)
VALUES ($1, 'buyers', 'Buyers', 'STATIC', NULL, $2, $2), ($1, 'vip', 'VIP', 'STATIC', NULL, $2, $2)
"""
CHANGES_SQL = """
INSERT INTO segment_changes (program_id, segment_id, member_id, change, at)
SELECT $1, $2, m.id, 'ENTERED', $3::timestamptz - ((m.id * 7919) % 7776000) * interval '1 second'
FROM members m WHERE m.program_id = $1 AND m.id % $4 = 0
"""
LEFT_SQL = """
INSERT INTO segment_changes (program_id, segment_id, member_id, change, at)
SELECT $1, $2, c.member_id, 'LEFT', c.at + (c.at - ($3::timestamptz - interval '90 days')) / 2
FROM segment_changes c WHERE c.segment_id = $2 AND c.member_id % 10 = 0
"""
MEMBERSHIPS_SQL = """
INSERT INTO segment_memberships (program_id, segment_id, member_id, since)
SELECT c.program_id, $1, c.member_id, c.at FROM segment_changes c
WHERE c.segment_id = $1 AND c.change = 'ENTERED' AND c.member_id % 10 <> 0
"""
MESSAGES_SQL = """
INSERT INTO messages
  (program_id, member_id, segment_id, segment_key, channel, template, status, created_at, sent_at)
SELECT $1, c.member_id, $2, 'buyers', 'IN_APP', 'welcome', 'SENT', c.at, c.at
FROM segment_changes c WHERE c.segment_id = $2 AND c.change = 'ENTERED'
"""


async def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


async def run(members: int, events: int, quick: bool, keep: bool = False) -> dict[str, Any]:
    name = f"loyalty_bench_an_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{SERVER.replace('+asyncpg', '')}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"{SERVER}/{name}"
    figures: dict[str, Any] = {"bench": "analytics", "quick": quick, "members": members, "events": events}
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        now = datetime.now(UTC).replace(microsecond=0)
        connection = await asyncpg.connect(f"{SERVER.replace('+asyncpg', '')}/{name}")
        try:
            started = time.perf_counter()
            program_id, _ = await generate(connection, members, events, now, ledger=False)
            await connection.execute(SEGMENTS_SQL, program_id, now)
            ids = dict(
                await connection.fetch("SELECT key, id FROM segments WHERE program_id = $1", program_id)
            )
            await connection.execute("SET session_replication_role = replica")
            for key, every in (("buyers", 2), ("vip", 3)):
                await connection.execute(CHANGES_SQL, program_id, ids[key], now, every)
                await connection.execute(LEFT_SQL, program_id, ids[key], now)
                await connection.execute(MEMBERSHIPS_SQL, ids[key])
            await connection.execute(MESSAGES_SQL, program_id, ids["buyers"])
            await connection.execute("SET session_replication_role = DEFAULT")
            await connection.execute("ANALYZE")
            figures["generate_s"] = round(time.perf_counter() - started, 1)
            figures["changes"] = await connection.fetchval("SELECT count(*) FROM segment_changes")
            figures["buyers"] = await connection.fetchval(FLOOR_SQL, ids["buyers"])
            log(f"generated in {figures['generate_s']}s: {figures['changes']:,} changes")
            floor_s, _ = await timed(
                connection.fetchval(
                    "SELECT count(*) FROM segment_memberships WHERE segment_id = $1", ids["buyers"]
                )
            )
        finally:
            await connection.close()

        db = Database(create_engine(url, pool_size=2))
        try:
            service = SegmentAnalytics(db, _Clock(now))
            start = (now - timedelta(days=29)).date()
            year = now.date() - timedelta(days=365)
            # Rows written straight in SQL are unrecorded: the report probes them, as before migration 0011.
            await service.report(program_id, "buyers", start, now.date())  # warm the cache
            probed_s, _ = await timed(service.report(program_id, "buyers", year, now.date()))
            fill_s, _ = await timed(_fill(db, program_id))
            log(f"365 d unrecorded (probed) {probed_s:.2f}s; recorded the history in {fill_s:.1f}s")
            await service.report(program_id, "buyers", start, now.date())  # warm the cache
            report_s, report = await timed(service.report(program_id, "buyers", start, now.date()))
            overlap_s, overlap = await timed(service.overlap(program_id, "buyers", "vip"))
            year_s, _ = await timed(service.report(program_id, "buyers", year, now.date()))
        finally:
            await db.dispose()
        figures.update(
            report_30d_s=round(report_s, 3),
            report_365d_s=round(year_s, 3),
            report_365d_probed_s=round(probed_s, 3),
            fill_s=round(fill_s, 1),
            overlap_s=round(overlap_s, 3),
            floor_s=round(floor_s, 3),
            report_ratio=round(report_s / floor_s, 1),
            overlap_ratio=round(overlap_s / floor_s, 1),
            entered_30d=report.entered,
            conversion_rate=report.conversion.rate,
            both=overlap.both,
            goal_s=2.0,
            met=max(report_s, year_s, overlap_s) < 2.0,
        )
        log(f"report 30 d {report_s:.2f}s, 365 d {year_s:.2f}s, overlap {overlap_s:.2f}s")
        log(f"floor {floor_s:.3f}s")
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            admin = await asyncpg.connect(f"{SERVER.replace('+asyncpg', '')}/postgres")
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return figures


async def _fill(db: Database, program_id: int) -> None:
    """Record the generated history's conversions and reactions, as migration 0011 does."""
    async with db.unit_of_work() as uow:
        await fill_conversions(uow.session, program_id)
        await uow.session.execute(text("ANALYZE segment_changes"))
        await uow.session.execute(text("ANALYZE messages"))


class _Clock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20k members, 200k events")
    parser.add_argument("--members", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the database (to EXPLAIN by hand)")
    args = parser.parse_args(argv)
    members = args.members or (20_000 if args.quick else 1_000_000)
    events = args.events or (200_000 if args.quick else 3_000_000)
    print(json.dumps(asyncio.run(run(members, events, args.quick, args.keep))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
