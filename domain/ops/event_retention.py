"""`loyalty prune --events-retention DAYS`: drops the raw-event partitions older than a retention.

Only on PostgreSQL, where `events` is partitioned by month (domain/db/partitions.py): a
month's partition goes whole once it ends `days` or more before now, in one short
transaction per partition (a DROP, not a DELETE: no dead rows, no vacuum). Rows of the
DEFAULT partition older than the oldest month kept are deleted. SQLite refuses: it has no
`event_keys` claim table, so a re-sent externalId of a deleted event would be accepted
again (docs/operations.md, "Raw-event retention").

The retention must exceed the longest window any stored definition reads raw events
over (`Window`; segment conditions and the tier ladder here, fraud rules, boards and
challenges in their packages); a prune refuses otherwise, naming that window. What
reads the whole history reads aggregates that outlive the events: the daily buckets
(`event_aggregates`: counts, sums, RFM, lifecycle, churn features) and the ledger
(balances, points), so all-history metrics stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database
from domain.db.partitions import (
    EVENTS,
    UPKEEP_LOCK,
    add_months,
    default_partition,
    month_of,
    month_start,
    partitions_of,
)
from domain.enums import EventStatus
from domain.errors import DomainError
from domain.models import ChurnModel, Event, Program
from domain.predict.features import HORIZON_DAYS
from domain.predict.service import DEFAULT_CUTOFFS, LOOKBACK_DAYS
from domain.segments.engine import SegmentEngine
from domain.segments.facts import Needs

DAY_S = 86_400


class RetentionRefused(DomainError):
    code = "RETENTION_TOO_SHORT"


class PostgresqlOnly(DomainError):
    code = "POSTGRESQL_ONLY"


@dataclass(frozen=True)
class Window:
    """How far back one stored definition reads raw events: `days` (None: the whole history)."""

    days: float | None
    #: What reads them, e.g. "segment 'lapsed' of program 'shop'".
    source: str

    def describe(self) -> str:
        span = "the whole history" if self.days is None else f"{_days(self.days)} days"
        return f"{self.source} reads raw events over {span}"


def longest(windows: Iterable[Window]) -> Window | None:
    """The longest window (the whole history is longest); None when nothing reads raw events."""
    return max(windows, key=lambda w: math.inf if w.days is None else w.days, default=None)


def require_longer(retention_days: int, windows: Iterable[Window]) -> None:
    """Refuse a retention that does not exceed the longest window."""
    found = longest(windows)
    if found is not None and (found.days is None or retention_days <= found.days):
        raise RetentionRefused(
            f"--events-retention {retention_days} days does not exceed the longest window: {found.describe()}"
        )


def needs_window(needs: Needs, source: str) -> Window | None:
    """The window conditions read raw events over (what the daily buckets answer reads none)."""
    reaches = [*needs.event_lookback.values(), *needs.org_lookback.values()]
    if not reaches:
        return None
    if any(reach is None for reach in reaches):
        return Window(None, source)
    return Window(max(r for r in reaches if r is not None) / DAY_S, source)


async def segment_windows(session: AsyncSession, engine: SegmentEngine) -> list[Window]:
    """Per program, the windows of its dynamic segments' conditions and of its tier ladder."""
    windows: list[Window] = []
    programs = (await session.execute(select(Program.id, Program.key).order_by(Program.id))).all()
    for program_id, program_key in programs:
        view = await engine.view(session, program_id)
        nodes = [
            (d.condition, f"segment {d.key!r} of program {program_key!r}")
            for d in view.index.ordered
            if d.condition is not None
        ]
        if view.ladder is not None:
            nodes.append((view.ladder.reaches(0), f"the tier ladder of program {program_key!r}"))
        for node, source in nodes:
            found = needs_window(Needs.of([node], view.zone), source)
            if found is not None:
                windows.append(found)
    return windows


async def churn_windows(session: AsyncSession) -> list[Window]:
    """Programs with a trained churn model: retraining reads LOOKBACK_DAYS before its oldest weekly
    cutoff (the ledger's points are dated by their events), with the cutoffs of its newest model."""
    windows: list[Window] = []
    newest = (
        select(Program.key, ChurnModel.report)
        .join(ChurnModel, ChurnModel.program_id == Program.id)
        .order_by(Program.id, ChurnModel.trained_at.desc())
    )
    seen: set[str] = set()
    for program_key, report in await session.execute(newest):
        if program_key in seen:
            continue
        seen.add(program_key)
        cutoffs = len(report.get("cutoffs", [])) + len(report.get("holdoutCutoffs", [])) or DEFAULT_CUTOFFS
        days = cutoffs * 7 + HORIZON_DAYS + LOOKBACK_DAYS
        windows.append(Window(days, f"the churn model of program {program_key!r}"))
    return windows


@dataclass(frozen=True)
class DroppedMonth:
    partition: str
    rows: int

    def as_json(self) -> dict[str, object]:
        return {"partition": self.partition, "rows": self.rows}


@dataclass(frozen=True)
class EventPrune:
    #: Partitions ending at or before it go whole; DEFAULT-partition rows before it are deleted.
    before: datetime
    dropped: Sequence[DroppedMonth]
    default_rows: int

    def as_json(self) -> dict[str, object]:
        return {
            "table": "events",
            "goes": "whole monthly partitions that end before the cutoff, and older DEFAULT-partition rows",
            "olderThan": self.before.isoformat(),
            "rows": sum(d.rows for d in self.dropped) + self.default_rows,
            "partitions": [d.as_json() for d in self.dropped],
        }


def boundary(now: datetime, retention_days: int) -> datetime:
    """The start of the oldest month kept: every partition ending at or before it is entirely older."""
    return month_start(now - timedelta(days=retention_days))


class EventPartitionPruner:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def run(self, retention_days: int, windows: Iterable[Window], dry_run: bool) -> EventPrune:
        if self.db.dialect != "postgresql":
            raise PostgresqlOnly(
                "--events-retention drops event partitions, which only PostgreSQL has; on SQLite "
                "events are kept (docs/operations.md, Raw-event retention)"
            )
        require_longer(retention_days, windows)
        before = boundary(self.clock.now(), retention_days)
        async with self.db.read() as session:
            held = await session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.occurred_at < before, Event.status == EventStatus.HELD_FOR_REVIEW.value)
            )
            if held:
                raise RetentionRefused(
                    f"{held} events held for review occurred before {before.isoformat()}: approve or "
                    "reject them first (their partitions would go with them)"
                )
            months = [
                (name, month)
                for name in await partitions_of(session, EVENTS)
                if (month := month_of(name)) is not None and add_months(month, 1) <= before
            ]
        dropped = [await self._drop(name, dry_run) for name, _ in sorted(months, key=lambda m: m[1])]
        default_rows = await self._default_rows(before, dry_run)
        return EventPrune(before, dropped, default_rows)

    async def _drop(self, name: str, dry_run: bool) -> DroppedMonth:
        async with self.db.unit_of_work() as uow:
            rows = int(await uow.session.scalar(text(f"SELECT count(*) FROM {name}")) or 0)
            if not dry_run:
                await uow.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPKEEP_LOCK})
                await uow.session.execute(text(f"ALTER TABLE {EVENTS.name} DETACH PARTITION {name}"))
                await uow.session.execute(text(f"DROP TABLE {name}"))
        return DroppedMonth(name, rows)

    async def _default_rows(self, before: datetime, dry_run: bool) -> int:
        default = default_partition(EVENTS)
        where = f"FROM {default} WHERE {EVENTS.column} < :before"
        async with self.db.unit_of_work() as uow:
            if dry_run:
                return int(
                    await uow.session.scalar(text(f"SELECT count(*) {where}"), {"before": before}) or 0
                )
            result = await uow.session.execute(text(f"DELETE {where}"), {"before": before})
            return int(getattr(result, "rowcount", 0))


def _days(days: float) -> str:
    return str(int(days)) if days == int(days) else f"{days:.2f}"
