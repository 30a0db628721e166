"""Version 2 "dates" operands (issue 17): compiled SQL next to hand-written SQL, UTC next to Istanbul.

One fresh PostgreSQL database migrated with `migrations.upgrade` (dropped at the end); members with
a birthDate and an app version, logins over the last 10 days at random hours (and their UTC daily
buckets). For each condition, the compiled `Compilation.members_where` (program in UTC, then in
Europe/Istanbul) is timed next to a hand-written SELECT giving the same member set (checked), best
of `--rounds`. Local-date `streak` / `distinct_days` outside UTC read raw events (the buckets are
UTC days): this measures what that costs.

Progress goes to stderr; the last line on stdout is one JSON object with the figures.
Usage: .venv/bin/python bench/local_dates.py [--members N] [--rounds N] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url

import migrations
from domain.db.engine import Database, create_engine
from domain.segments.compile import Compilation
from domain.segments.rules import parse_rule

MEMBERS_SQL = """
INSERT INTO members (program_id, external_id, kind, attributes, channels, joined_at, created_at, updated_at,
                     points_balance, pending_points)
SELECT $1, 'm' || g, 'CUSTOMER',
       jsonb_build_object(
           'birthDate', to_char(date '1970-01-01' + (g * 7919) % 18000, 'YYYY-MM-DD'),
           'device', jsonb_build_object('appVersion',
               (ARRAY['4.2', '4.9.1', '5', '5.0.1', '10.2', 'v6.1', 'beta', '12'])[1 + g % 8])),
       CASE WHEN g % 3 = 0 THEN '["PUSH"]'::jsonb ELSE '["EMAIL"]'::jsonb END,
       $2::timestamptz - make_interval(days => 1 + g % 400),
       $2::timestamptz - make_interval(days => 1 + g % 400),
       $2, 0, 0
FROM generate_series(0, $3 - 1) AS g
"""
#: Each member logs in on some of the last 10 days, at an hour that makes UTC and Istanbul dates differ.
EVENTS_SQL = """
INSERT INTO events (program_id, external_id, member_id, type, occurred_at, amount, properties, status,
                    points_awarded, message, content_hash, received_at)
SELECT m.program_id, 'l' || m.id || '-' || d, m.id, 'login',
       $2::timestamptz - make_interval(days => d, hours => ((m.id * 13 + d * 5) % 24)::int),
       NULL, '{}'::jsonb,
       'ACCEPTED', 0, NULL, md5(m.id || '-' || d), $2
FROM members m, generate_series(0, 9) AS d
WHERE m.program_id = $1 AND (m.id + d) % 4 <> 0
"""
AGGREGATES_SQL = """
INSERT INTO event_aggregates (member_id, event_type, day, program_id, count, amount_count, amount_sum,
                              amount_min, amount_max, first_at, last_at)
SELECT member_id, type, (occurred_at AT TIME ZONE 'UTC')::date, program_id, count(*), 0, 0, NULL, NULL,
       min(occurred_at), max(occurred_at)
FROM events WHERE program_id = $1 GROUP BY member_id, type, (occurred_at AT TIME ZONE 'UTC')::date, program_id
"""

#: rule -> hand-written SQL ($1 program, $2 now, $3 zone, $4 local today as a date)
CASES: dict[str, str] = {
    "streak(login) >= 3": """
        WITH days AS (SELECT DISTINCT member_id, (occurred_at AT TIME ZONE $3)::date AS day FROM events
                      WHERE program_id = $1 AND type = 'login' AND status = 'ACCEPTED'
                        AND occurred_at >= ($4::date - 5)::timestamp AT TIME ZONE $3)
        SELECT a.member_id FROM days a
        JOIN days b ON b.member_id = a.member_id AND b.day = a.day - 1
        JOIN days c ON c.member_id = a.member_id AND c.day = a.day - 2
        WHERE a.day = $4::date OR (a.day = $4::date - 1 AND NOT EXISTS (
            SELECT 1 FROM days t WHERE t.member_id = a.member_id AND t.day = $4::date))
        GROUP BY a.member_id""",
    "distinct_days(login, 7d) >= 4": """
        SELECT member_id FROM events WHERE program_id = $1 AND type = 'login' AND status = 'ACCEPTED'
          AND occurred_at > $2::timestamptz - interval '7 days' AND occurred_at <= $2
        GROUP BY member_id HAVING count(DISTINCT (occurred_at AT TIME ZONE $3)::date) >= 4""",
    "days_to_anniversary(birthDate) <= 6": """
        SELECT id FROM members WHERE program_id = $1 AND EXISTS (
            SELECT 1 FROM generate_series(0, 6) k
            WHERE to_char($4::date + k, 'MM-DD') = substr(attributes->>'birthDate', 6, 5)
               OR (substr(attributes->>'birthDate', 6, 5) = '02-29'
                   AND to_char($4::date + k, 'MM-DD') = '03-01'
                   AND NOT (extract(year FROM $4::date + k)::int % 4 = 0)))""",
    'version(device.appVersion) < "5.0"': """
        SELECT id FROM members WHERE program_id = $1
          AND attributes->'device'->>'appVersion' ~ '^v?[0-9]+(\\.[0-9]+)*$'
          AND string_to_array(ltrim(attributes->'device'->>'appVersion', 'v'), '.')::numeric[] < '{5}'""",
    'not (channels contains "PUSH")': """
        SELECT id FROM members WHERE program_id = $1 AND NOT channels @> '["PUSH"]'""",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run(database_url: str, members: int, rounds: int, keep: bool = False) -> dict[str, Any]:
    server = make_url(database_url).set(drivername="postgresql+asyncpg")
    name = f"loyalty_bench_dates_{secrets.token_hex(4)}"
    url = server.set(database=name).render_as_string(hide_password=False)
    connect_args = {"host": server.host or "127.0.0.1", "port": server.port or 5432, "user": server.username}
    admin = await asyncpg.connect(database="postgres", **connect_args)
    await admin.execute(f'CREATE DATABASE "{name}"')
    figures: dict[str, Any] = {"bench": "local_dates", "members": members}
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        now = datetime(2026, 3, 15, 21, 30, tzinfo=UTC)  # 00:30 on 16 March in Istanbul
        connection = await asyncpg.connect(database=name, **connect_args)
        program_id = await connection.fetchval(
            "INSERT INTO programs (key, name, kind, settings, created_at) "
            "VALUES ('bench', 'Bench', 'B2C', '{}'::jsonb, $1) RETURNING id",
            now,
        )
        await connection.execute(MEMBERS_SQL, program_id, now, members)
        await connection.execute(EVENTS_SQL, program_id, now)
        await connection.execute(AGGREGATES_SQL, program_id)
        await connection.execute("ANALYZE")
        figures["events"] = await connection.fetchval("SELECT count(*) FROM events")
        db = Database(create_engine(url, pool_size=2))
        for zone_name in ("UTC", "Europe/Istanbul"):
            zone = ZoneInfo(zone_name)
            today = now.astimezone(zone).date()
            for rule, hand_written in CASES.items():
                statement = Compilation("postgresql", program_id, now, {}, zone=zone).members_where(
                    parse_rule(rule)
                )
                engine_s, engine_set = float("inf"), set[int]()
                for _ in range(rounds):
                    async with db.read() as session:
                        started = time.perf_counter()
                        rows: Sequence[Any] = (await session.execute(statement)).scalars().all()
                        engine_set = {int(i) for i in rows}
                        engine_s = min(engine_s, time.perf_counter() - started)
                typed = (  # every parameter typed, whichever the query uses
                    f"SELECT * FROM ({hand_written}) q WHERE $1::bigint IS NOT NULL AND $2::timestamptz "
                    "IS NOT NULL AND $3::text IS NOT NULL AND $4::date IS NOT NULL"
                )
                names = (("program", "bigint"), ("now", "timestamptz"), ("zone", "text"), ("today", "date"))
                for n, (name, kind) in enumerate(names, start=1):
                    typed = typed.replace(f"${n}::{kind}", f"${n}").replace(
                        f"${n}", f"CAST(:{name} AS {kind})"
                    )
                floor = text(typed)
                arguments = {"program": program_id, "now": now, "zone": zone_name, "today": today}
                floor_s, floor_set = float("inf"), set[int]()
                for _ in range(rounds):  # through SQLAlchemy too: the same fetch overhead as the engine's
                    async with db.read() as session:
                        started = time.perf_counter()
                        found: Sequence[Any] = (await session.execute(floor, arguments)).scalars().all()
                        floor_set = {int(i) for i in found}
                        floor_s = min(floor_s, time.perf_counter() - started)
                if engine_set != floor_set:
                    log(f"MISMATCH {zone_name} {rule}: {len(engine_set)} vs {len(floor_set)}")
                key = f"{zone_name} {rule}"
                figures[key] = {
                    "members": len(engine_set),
                    "engine_ms": round(engine_s * 1000, 1),
                    "floor_ms": round(floor_s * 1000, 1),
                    "ratio": round(engine_s / floor_s, 2),
                    "same_set": engine_set == floor_set,
                }
                log(f"{key}: {figures[key]}")
        await connection.close()
        await db.engine.dispose()
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="do not drop the database (for EXPLAIN by hand)")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.database_url, args.members, args.rounds, args.keep))
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
