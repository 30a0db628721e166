"""Profile of the accrual path with segments: `record_events` in process, with and without 20 segments.

Builds (once, kept between runs) a PostgreSQL database with the data of `bench/segments.py`
(`--members`, `--events`), the 20 DYNAMIC segments of `definitions(0)` recomputed to steady state
and a second program with a copy of the members and no segments. Each run then records
`--events-per-run` fresh events (the ingest mix of bench/segments.py) in batches of `--batch`
through `EventService.record_events` (AllowAll auditor, no HTTP) into both programs, alternating,
and reports events/s and this process's CPU per event for each; with `--profile FILE` the
segment runs are also recorded by cProfile (the top functions go to stderr); `--timers` prints
the CPU per batch of each engine step; `--settle` first runs the time-flip scheduler until nobody
is due (exact due times, as in production); `--incremental N` times N single-member calls instead.

Limits: one process and one connection at a time; wall times include PostgreSQL, CPU times are
this (Python) process only. `--drop` removes the database.
Usage: .venv/bin/python -m bench.profile_segments [--rounds 3] [--timers] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import select
from sqlalchemy.engine import make_url

import migrations
from bench.segments import (
    DEFAULT_DATABASE_URL,
    FLOOR_TABLES,
    bare_copy,
    create_segments,
    definitions,
    generate,
    ingest,
    ingest_drafts,
    recompute_engine,
)
from domain.audit import AllowAll
from domain.changes import MembersChanged
from domain.clock import SystemClock
from domain.db.engine import Database, create_engine
from domain.events.service import EventService
from domain.events.validation import EventDraft
from domain.models import Program
from domain.segments.engine import SegmentEngine

NAME = "loyalty_segspeed_profile"
#: Names in domain.segments.engine timed by `--timers` (wall time per call, summed).
TIMED = (
    "lock_members",
    "load_facts",
    "_evaluate_plan",
    "earliest_change",
    "stored_due_times",
    "apply_flips",
    "write_due_times",
)
TIMES: dict[str, float] = {}


def install_timers() -> None:
    """Wrap the engine's helpers so each call adds its wall time to TIMES (sync and async alike)."""
    import functools
    import inspect

    from domain.segments import engine as module

    for name in TIMED:
        original = getattr(module, name)
        TIMES[name] = 0.0
        if inspect.iscoroutinefunction(original):

            async def timed_async(
                *args: object, _f: object = original, _n: str = name, **kw: object
            ) -> object:
                t = time.process_time()
                try:
                    return await _f(*args, **kw)  # type: ignore[operator]
                finally:
                    TIMES[_n] += time.process_time() - t

            setattr(module, name, functools.wraps(original)(timed_async))
        else:

            def timed_sync(*args: object, _f: object = original, _n: str = name, **kw: object) -> object:
                t = time.process_time()
                try:
                    return _f(*args, **kw)  # type: ignore[operator]
                finally:
                    TIMES[_n] += time.process_time() - t

            setattr(module, name, functools.wraps(original)(timed_sync))
    original_changed = module.SegmentEngine.members_changed
    TIMES["members_changed"] = 0.0

    async def members_changed(self: object, *args: object, **kw: object) -> None:
        t = time.process_time()
        try:
            await original_changed(self, *args, **kw)  # type: ignore[arg-type]
        finally:
            TIMES["members_changed"] += time.process_time() - t

    module.SegmentEngine.members_changed = members_changed  # type: ignore[method-assign]


async def settle(db: Database) -> None:
    """Run the time-flip scheduler until nobody is due: every member then has its exact due time."""
    from domain.segments.scheduler import TimeFlipScheduler

    scheduler = TimeFlipScheduler(db, SystemClock(), SegmentEngine())
    passes = 0
    while await scheduler.run_once():
        passes += 1
    log(f"scheduler settled after {passes + 1} passes")


def log(message: str) -> None:
    sys.stderr.write(f"[profile {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


async def prepare(url: str, server: object, members: int, events: int) -> None:
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", NAME):
            return
        await admin.execute(f'CREATE DATABASE "{NAME}"')
    finally:
        await admin.close()
    await asyncio.to_thread(migrations.upgrade, url)
    now = datetime.now(UTC).replace(microsecond=0)
    connection = await asyncpg.connect(host="127.0.0.1", user="postgres", database=NAME)
    try:
        program_id, _ = await generate(connection, members, events, now, True)
        await connection.execute(FLOOR_TABLES)
        await bare_copy(connection, program_id, now)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    db = Database(create_engine(url, pool_size=2))
    try:
        async with db.unit_of_work() as uow:
            await create_segments(uow.session, program_id, definitions(0), now)
        await recompute_engine(db, program_id, now)
    finally:
        await db.dispose()


async def incremental(db: Database, program_id: int, calls: int, seed: int) -> None:
    """`members_changed` for one member and one event type at a time: wall and CPU ms per call."""
    from bench.segments import percentile, pick_type
    from domain.changes import MembersChanged
    from domain.models import Member

    rng = random.Random(seed)
    engine = SegmentEngine()
    async with db.read() as session:
        ids = list(
            (await session.execute(select(Member.id).where(Member.program_id == program_id))).scalars()
        )
        await engine.index(session, program_id)
    walls, cpus = [], []
    now = datetime.now(UTC)
    for _ in range(calls):
        member_id = ids[rng.randrange(len(ids) // 10)] if rng.random() < 0.4 else rng.choice(ids)
        change = MembersChanged(program_id, {member_id: frozenset({pick_type(rng)})})
        async with db.unit_of_work() as uow:
            cpu, wall = time.process_time(), time.perf_counter()
            await engine.members_changed(uow.session, change, now)
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
    wall_p, cpu_p = (
        (percentile(walls, 50), percentile(walls, 99)),
        (percentile(cpus, 50), percentile(cpus, 99)),
    )
    print(
        f"incremental ({calls} calls): wall p50 {wall_p[0]:.2f} p99 {wall_p[1]:.2f} ms; "
        f"CPU p50 {cpu_p[0]:.2f} p99 {cpu_p[1]:.2f} ms, mean {sum(cpus) / len(cpus):.2f}"
    )


async def run(options: argparse.Namespace) -> None:
    server = make_url(options.database_url).set(drivername="postgresql+asyncpg")
    url = server.set(database=NAME).render_as_string(hide_password=False)
    if options.drop:
        admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        await admin.close()
        return
    await prepare(url, server, options.members, options.events)
    db = Database(create_engine(url, pool_size=2))
    if options.settle:
        await settle(db)
    if options.timers:
        install_timers()
    if options.no_gc:
        import gc

        gc.disable()
    try:
        async with db.read() as session:
            ids = dict((await session.execute(select(Program.key, Program.id))).all())
        if options.incremental:
            await incremental(db, ids["bench"], options.incremental, options.seed or 1)
            return
        db.bus.handle(MembersChanged, SegmentEngine().handle)  # segments evaluated in the pipeline
        service = EventService(db, SystemClock(), AllowAll())
        rng = random.Random(options.seed or time.time_ns())
        tag = f"{time.time_ns():x}"
        profiler = cProfile.Profile() if options.profile else None
        totals = {"bare": [0.0, 0.0, 0], "bench": [0.0, 0.0, 0]}
        for round_ in range(options.rounds):
            drafts = ingest_drafts(
                rng, options.members, options.events_per_run, f"{tag}-{round_}", datetime.now(UTC)
            )
            for key in ("bare", "bench") if round_ % 2 == 0 else ("bench", "bare"):
                copy: Sequence[EventDraft] = [
                    replace(d, external_id=f"{key}-{d.external_id}") for d in drafts
                ]
                cpu, wall = time.process_time(), time.perf_counter()
                if profiler is not None and key == "bench":
                    profiler.enable()
                before = dict(TIMES)
                await ingest(service, ids[key], copy, options.batch)
                if profiler is not None and key == "bench":
                    profiler.disable()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                totals[key][0] += wall
                totals[key][1] += cpu
                totals[key][2] += len(copy)
                log(
                    f"round {round_ + 1} {key}: {len(copy) / wall:,.0f} events/s, "
                    f"{cpu / len(copy) * 1e6:,.0f} µs CPU per event"
                )
                if key == "bench" and TIMES:
                    batches = len(copy) / options.batch
                    log(
                        "  CPU ms per batch: "
                        + ", ".join(f"{n} {(TIMES[n] - before[n]) / batches * 1000:.1f}" for n in TIMES)
                        + f"; record_events {wall / batches * 1000:.1f}"
                    )
        bare, bench = totals["bare"], totals["bench"]
        for label, (wall, cpu, count) in (("no segments", bare), ("20 segments", bench)):
            print(f"{label}: {count / wall:,.0f} events/s, {cpu / count * 1e6:,.0f} µs CPU/event")
        print(f"wall ratio {bench[0] / bare[0]:.2f}, CPU ratio {bench[1] / bare[1]:.2f}")
        if profiler is not None:
            profiler.dump_stats(options.profile)
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(60)
            stats.sort_stats("tottime").print_stats(40)
            sys.stderr.write(out.getvalue())
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--events-per-run", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--drop", action="store_true")
    parser.add_argument(
        "--incremental", type=int, default=0, help="time this many single-member calls instead"
    )
    parser.add_argument("--no-gc", action="store_true", help="cyclic GC off (to see what it costs)")
    parser.add_argument("--timers", action="store_true", help="wall time per batch of the engine's steps")
    parser.add_argument(
        "--settle", action="store_true", help="run the time-flip scheduler to exact due times first"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
