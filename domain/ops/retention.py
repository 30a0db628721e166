"""`loyalty prune`: deletes what the engine no longer reads from the tables that only grow.

What may go per table (the periods are `Settings.retention`; docs/operations.md,
"Retention", says why each is safe):

- segment_changes: changes logged before the cutoff and already relayed. Size
  history and analytics read the log from their first day on only (sizes are
  walked back from today's); the relay reads after its position; a live replay
  refuses a `since` older than what was pruned (`pruned_through`).
- outbox: DELIVERED and DEAD rows created before their cutoffs; PENDING rows stay.
- messages: created before the cutoff, no longer QUEUED, with no outbox row left.
- fraud_findings: made before the cutoff, of events no longer held for review (the
  review queue shows a held event's findings; `non-compliant` counts blocks of
  the last 366 days at most, and the minimum period is longer).
- events: nothing here. The ledger, refunds, fraud history, leaderboard rebuilds and
  the property filters of segment rules read them; `--events-retention` drops whole
  old months on PostgreSQL (domain/ops/event_retention.py).

Each rule's candidates are the rows below a boundary id (the first row at or
after the cutoff; for the change log, no further than the relay's position), so
every count and delete is a primary-key range read, however big the table.
Deletes go in batches of `batch` rows, each its own short transaction, so a
prune runs beside ingest. A dry run counts exactly what a run would delete now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, and_, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.messages import MessageStatus
from domain.campaigns.outbox import OutboxStatus
from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.enums import EventStatus
from domain.live.relay import stored_position
from domain.models import Event, FraudFinding, Message, OutboxItem, RelayPosition, SegmentChange
from domain.ops.event_retention import EventPrune
from domain.settings import Retention

#: relay_positions row holding the highest change-log id pruned (live replay refuses older cursors).
PRUNED = "segment_changes:pruned"
BATCH = 5000


@dataclass(frozen=True)
class Rule:
    """One kind of row of one table that may go."""

    table: str
    #: What goes, in words (printed in the report).
    goes: str
    #: The table's primary key, its time column, and the cutoff on it.
    id: Any
    time: Any
    cutoff: datetime
    #: Further conditions on the candidate rows.
    where: tuple[ColumnElement[bool], ...] = ()
    #: Only rows no outbox row refers to, once the outbox rules ran (messages).
    unreferenced_by_outbox: bool = False


@dataclass(frozen=True)
class Pruned:
    table: str
    goes: str
    cutoff: datetime
    rows: int

    def as_json(self) -> dict[str, object]:
        return {
            "table": self.table,
            "goes": self.goes,
            "olderThan": self.cutoff.isoformat(),
            "rows": self.rows,
        }


#: Tables `loyalty prune` never deletes from, with the reason (printed in the report).
KEPT = {
    "events": "never pruned by default: the ledger, refunds, fraud history, leaderboard rebuilds and "
    "segment rules' property filters read them (--events-retention drops old months on PostgreSQL)",
}


def rules(retention: Retention, now: datetime) -> list[Rule]:
    """The rules, in the order they run (outbox rows before the messages they keep)."""

    def before(days: int) -> datetime:
        return now - timedelta(days=days)

    held = exists().where(
        Event.id == FraudFinding.event_id, Event.status == EventStatus.HELD_FOR_REVIEW.value
    )
    return [
        Rule(
            "segment_changes",
            "changes logged before the cutoff and already relayed",
            SegmentChange.id,
            SegmentChange.at,
            before(retention.segment_changes_days),
        ),
        Rule(
            "outbox",
            "DELIVERED deliveries created before the cutoff",
            OutboxItem.id,
            OutboxItem.created_at,
            before(retention.delivered_days),
            (OutboxItem.status == OutboxStatus.DELIVERED.value,),
        ),
        Rule(
            "outbox",
            "DEAD deliveries created before the cutoff",
            OutboxItem.id,
            OutboxItem.created_at,
            before(retention.dead_days),
            (OutboxItem.status == OutboxStatus.DEAD.value,),
        ),
        Rule(
            "messages",
            "messages created before the cutoff, not QUEUED, with no outbox row left",
            Message.id,
            Message.created_at,
            before(retention.messages_days),
            (Message.status != MessageStatus.QUEUED.value,),
            unreferenced_by_outbox=True,
        ),
        Rule(
            "fraud_findings",
            "findings made before the cutoff, of events not held for review",
            FraudFinding.id,
            FraudFinding.at,
            before(retention.findings_days),
            (~held,),
        ),
    ]


class Pruner:
    def __init__(self, db: Database, clock: Clock, retention: Retention, *, batch: int = BATCH) -> None:
        self.db = db
        self.clock = clock
        self.retention = retention
        self.batch = batch

    async def run(self, dry_run: bool) -> list[Pruned]:
        """What goes per rule: counted (dry run) or deleted, in batches."""
        chosen = rules(self.retention, self.clock.now())
        async with self.db.read() as session:
            plan = [(rule, await _boundary(session, rule)) for rule in chosen]
        outbox_going = or_(*(_going(r, b) for r, b in plan if r.id is OutboxItem.id))
        report = []
        for rule, boundary in plan:
            candidates = _going(rule, boundary)
            if rule.unreferenced_by_outbox:
                candidates &= ~exists().where(OutboxItem.message_id == rule.id, ~outbox_going)
            if dry_run:
                async with self.db.read() as session:
                    rows = await _count(session, rule, candidates)
            else:
                rows = await self._delete(rule, candidates, boundary)
            report.append(Pruned(rule.table, rule.goes, rule.cutoff, rows))
        return report

    async def _delete(self, rule: Rule, candidates: ColumnElement[bool], boundary: int) -> int:
        table = cast(Table, rule.id.table)
        # never correlated to the DELETE of the same table: the candidates are a query of their own
        chosen = select(rule.id).where(candidates).order_by(rule.id).limit(self.batch).correlate(None)
        deleted = 0
        while True:
            async with self.db.unit_of_work() as uow:
                result = cast(
                    CursorResult[Any],
                    await uow.session.execute(
                        delete(table).where(rule.id.in_(chosen)).execution_options(synchronize_session=False)
                    ),
                )
                if rule.id is SegmentChange.id and result.rowcount:
                    await _record_pruned(uow.session, boundary - 1, self.clock.now())
            deleted += result.rowcount
            if result.rowcount < self.batch:
                return deleted


async def _boundary(session: AsyncSession, rule: Rule) -> int:
    """Rows with a smaller id are the rule's candidates: every one of them is older than its cutoff.

    Rows logged out of time order past the boundary wait for a later prune.
    """
    first_kept = await session.scalar(
        select(rule.id).where(rule.time >= rule.cutoff).order_by(rule.id).limit(1)
    )
    if first_kept is None:
        first_kept = (await session.scalar(select(func.max(rule.id))) or 0) + 1
    if rule.id is SegmentChange.id:  # only what the relay has published
        relayed = await stored_position(session)
        first_kept = min(first_kept, (relayed or 0) + 1)
    return int(first_kept)


def _going(rule: Rule, boundary: int) -> ColumnElement[bool]:
    return and_(rule.id < boundary, *rule.where)


async def _count(session: AsyncSession, rule: Rule, candidates: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(rule.id.table).where(candidates)) or 0)


async def _record_pruned(session: AsyncSession, through: int, now: datetime) -> None:
    """Remember the highest change id that may be gone (it only grows)."""
    await session.execute(
        insert_for(session, RelayPosition.__table__)
        .values(name=PRUNED, position=through, updated_at=now)
        .on_conflict_do_nothing()
    )
    await session.execute(
        update(RelayPosition)
        .where(RelayPosition.name == PRUNED, RelayPosition.position < through)
        .values(position=through, updated_at=now)
    )


async def pruned_through(session: AsyncSession) -> int:
    """The highest change-log id `loyalty prune` may have deleted (0 when it never did)."""
    return await session.scalar(select(RelayPosition.position).where(RelayPosition.name == PRUNED)) or 0


def report_json(
    dry_run: bool, pruned: Sequence[Pruned], events: EventPrune | None = None
) -> dict[str, object]:
    """The report; `events`: what `--events-retention` dropped (without it, events are kept)."""
    kept = [{"table": t, "rows": 0, "goes": why} for t, why in KEPT.items()]
    return {
        "dryRun": dry_run,
        "tables": [p.as_json() for p in pruned] + (kept if events is None else [events.as_json()]),
    }
