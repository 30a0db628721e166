"""Expiry benchmark: the sweep draining 1M due lots, next to a hand-written SQL floor, in one run.

A fresh PostgreSQL database (`harness.PgServer`, migrated) is seeded in SQL with
`generate_series`: one program with a 365-day expiry, members holding ten lots each on average,
one ADJUSTMENT entry per lot and its lot, every lot already due (expired in the last 30 days),
balances equal to their lots. Then `ANALYZE` (autovacuum is off on this server: without it the
planner would believe the tables empty), and the database is copied (`CREATE DATABASE ... TEMPLATE`,
statistics included) so both contestants start from identical files:
- sweep: `ExpirySweeper.drain` (domain/ledger/expiry.py), the code the server's loop runs: batches
  of `--batch` lots, each claiming its members (FOR UPDATE SKIP LOCKED), posting one EXPIRY entry
  per lot and moving balances through domain/ledger/posting.py, with the message bus's handlers;
- floor: three statements in one transaction, the least any implementation must write: one
  INSERT ... SELECT of the expiry entries, one UPDATE of the balances, one UPDATE of the lots.
No ANALYZE runs while the clocks run (the sweep reads only the partial index of open lots).
Both results are checked: every lot emptied, one EXPIRY entry per lot, every balance at zero.
Usage: .venv/bin/python bench/expiry.py [--quick] [--lots N] [--batch N]
The last line on stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import DEFAULT_DATABASE_URL, PgServer, autovacuum_on, checkpoint, log
from domain.db.engine import Database, create_engine
from domain.ledger.expiry import ExpirySweeper

LOTS_PER_MEMBER = 10
PROGRAM_SQL = """
INSERT INTO programs (key, name, kind, settings, created_at, points_expiry_days)
VALUES ('bench-expiry', 'Expiry bench', 'B2C', '{}', $1::timestamptz - interval '800 days', 365) RETURNING id
"""
MEMBERS_SQL = """
INSERT INTO members (program_id, external_id, kind, attributes, channels, joined_at, created_at, updated_at,
                     points_balance, pending_points)
SELECT $1, 'm' || g, 'CUSTOMER', '{}', '[]', $2::timestamptz - interval '800 days',
       $2::timestamptz - interval '800 days', $2::timestamptz - interval '800 days', 0, 0
FROM generate_series(1, $3::int) g
"""
# lot g belongs to member (g % members); its entry was posted 366 to 395 days ago, so it is due
ENTRIES_SQL = """
INSERT INTO ledger_entries (program_id, member_id, points, status, kind, reason, idempotency_key,
                            request_hash, created_at)
SELECT $1, $2::bigint + g % $3::int, 5 + g % 20, 'POSTED', 'ADJUSTMENT', 'seeded', 'seed:' || g, 'seed',
       $4::timestamptz - interval '365 days' - (g % 2592000) * interval '1 second'
FROM generate_series(1, $5::int) g
"""
LOTS_SQL = """
INSERT INTO points_lots (program_id, member_id, entry_id, points, remaining, earned_at, expires_at)
SELECT program_id, member_id, id, points, points, created_at, created_at + interval '365 days'
FROM ledger_entries WHERE program_id = $1
"""
BALANCES_SQL = """
UPDATE members m SET points_balance = s.total
FROM (SELECT member_id, sum(points) AS total FROM ledger_entries WHERE program_id = $1 GROUP BY member_id) s
WHERE m.id = s.member_id
"""
FLOOR_SQL = (
    """
INSERT INTO ledger_entries (program_id, member_id, points, status, kind, reason, idempotency_key,
                            request_hash, created_at)
SELECT program_id, member_id, -remaining, 'POSTED', 'EXPIRY', 'points expired', 'expiry:' || id,
       md5(id::text), $2
FROM points_lots WHERE program_id = $1 AND expires_at <= $2 AND remaining > 0
""",
    """
UPDATE members m SET points_balance = m.points_balance - d.total
FROM (SELECT member_id, sum(remaining) AS total FROM points_lots
      WHERE program_id = $1 AND expires_at <= $2 AND remaining > 0 GROUP BY member_id) d
WHERE m.id = d.member_id
""",
    "UPDATE points_lots SET remaining = 0 WHERE program_id = $1 AND expires_at <= $2 AND remaining > 0",
)
CHECK_SQL = """
SELECT (SELECT count(*) FROM points_lots WHERE remaining > 0) AS open_lots,
       (SELECT count(*) FROM ledger_entries WHERE kind = 'EXPIRY') AS expiry_entries,
       (SELECT count(*) FROM members WHERE points_balance <> 0) AS nonzero_balances
"""


class PinnedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


async def seed(pg: PgServer, name: str, lots: int, now: datetime) -> int:
    """The program, its members, entries and due lots; ANALYZE; returns the program id."""
    connection = await pg.connect(name)
    try:
        members = max(1, lots // LOTS_PER_MEMBER)
        program_id = await connection.fetchval(PROGRAM_SQL, now)
        await connection.execute(MEMBERS_SQL, program_id, now, members)
        first = await connection.fetchval("SELECT min(id) FROM members WHERE program_id = $1", program_id)
        await connection.execute(ENTRIES_SQL, program_id, first, members, now, lots)
        await connection.execute(LOTS_SQL, program_id)
        await connection.execute(BALANCES_SQL, program_id)
        await connection.execute("ANALYZE")
        return int(program_id)
    finally:
        await connection.close()


async def copy(pg: PgServer, source: str, target: str) -> None:
    connection = await pg.connect("postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
    finally:
        await connection.close()


async def verify(pg: PgServer, name: str, lots: int) -> bool:
    connection = await pg.connect(name)
    try:
        row = await connection.fetchrow(CHECK_SQL)
    finally:
        await connection.close()
    ok = bool(row["open_lots"] == 0 and row["expiry_entries"] == lots and row["nonzero_balances"] == 0)
    if not ok:
        log(f"{name}: not fully expired: {dict(row)}")
    return ok


async def run_sweep(pg: PgServer, name: str, program_id: int, now: datetime, batch: int) -> tuple[float, int]:
    db = Database(create_engine(pg.database_url(name), pool_size=2))
    try:
        sweeper = ExpirySweeper(db, PinnedClock(now), batch=batch)
        started = time.perf_counter()
        expired = await sweeper.drain(program_id)
        return time.perf_counter() - started, expired
    finally:
        await db.dispose()


async def run_floor(pg: PgServer, name: str, program_id: int, now: datetime) -> float:
    connection = await pg.connect(name)
    try:
        started = time.perf_counter()
        async with connection.transaction():
            for statement in FLOOR_SQL:
                await connection.execute(statement, program_id, now)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def run(database_url: str, lots: int, batch: int, quick: bool) -> dict[str, Any]:
    pg = PgServer.parse(database_url)
    token = secrets.token_hex(4)
    sweep_db, floor_db = f"loyalty_bench_exp_{token}", f"loyalty_bench_expf_{token}"
    now = datetime.now(UTC).replace(microsecond=0)
    figures: dict[str, Any] = {"bench": "expiry", "quick": quick, "lots": lots, "batch": batch}
    figures["autovacuum"] = await autovacuum_on(pg)
    try:
        await pg.create(sweep_db)
        started = time.perf_counter()
        program_id = await seed(pg, sweep_db, lots, now)
        figures["seed_s"] = round(time.perf_counter() - started, 1)
        await copy(pg, sweep_db, floor_db)
        log(f"seeded {lots:,} due lots in {figures['seed_s']}s (ANALYZE included), copied for the floor")

        await checkpoint(pg, floor_db)
        floor_s = await run_floor(pg, floor_db, program_id, now)
        log(f"floor: {floor_s:.2f}s")
        await checkpoint(pg, sweep_db)
        sweep_s, expired = await run_sweep(pg, sweep_db, program_id, now, batch)
        log(f"sweep: {sweep_s:.2f}s, {expired:,} lots")
        figures.update(
            sweep_s=round(sweep_s, 2),
            floor_s=round(floor_s, 2),
            ratio=round(sweep_s / floor_s, 2),
            sweep_lots_per_s=round(expired / sweep_s),
            floor_lots_per_s=round(lots / floor_s),
            expired=expired,
            sweep_verified=await verify(pg, sweep_db, lots),
            floor_verified=await verify(pg, floor_db, lots),
        )
    finally:
        await pg.drop(sweep_db)
        await pg.drop(floor_db)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="50k lots instead of 1M (under a minute)")
    parser.add_argument("--lots", type=int)
    parser.add_argument("--batch", type=int, default=1000, help="lots per sweep transaction (the loop's)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="the PostgreSQL server")
    args = parser.parse_args(argv)
    lots = args.lots or (50_000 if args.quick else 1_000_000)
    print(json.dumps(asyncio.run(run(args.database_url, lots, args.batch, args.quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
