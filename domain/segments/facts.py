"""Loading `MemberFacts` for a set of members: a fixed number of queries, whatever the conditions.

`Needs` says which event types' buckets and raw events the conditions read, how
far back, and which raw events a `where` filter leaves out; `load_facts` reads
exactly that for many members at once: five plain column SELECTs (member rows,
tags, memberships, buckets, raw events), the keys as one array on PostgreSQL
(`domain.db.arrays`), no ORM entities. Raw events carry their properties only
for the types whose metrics read them (`where`, a property field).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Executable,
    Table,
    and_,
    case,
    false,
    null,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.events.refunds import not_refunded
from domain.models import Event, EventAggregate, Member, MemberTag, Organization, Segment, SegmentMembership
from domain.segments.conditions import AttrCompare, MetricCompare, Node, Scalar, walk
from domain.segments.evaluate import Bucket, EventFact, MemberFacts
from domain.segments.sqljson import JsonPath

_events = cast(Table, Event.__table__)
#: A metric's `where` filter: () selects every event.
Where = tuple[tuple[str, Scalar], ...]


@dataclass
class Needs:
    bucket_types: set[str] = field(default_factory=set)
    #: Raw events by type: how many seconds back, None for the whole history.
    event_lookback: dict[str, int | None] = field(default_factory=dict)
    #: Raw events by type: each reading metric's (seconds back or None, `where` filter).
    selections: dict[str, set[tuple[int | None, Where]]] = field(default_factory=dict)
    #: Raw events by type whose properties a metric reads: those its `where` filters select,
    #: or None: all of them (a property field).
    properties: dict[str, set[Where] | None] = field(default_factory=dict)

    def add(self, node: Node) -> None:
        for part in walk(node):
            if isinstance(part, AttrCompare) and part.path == "lifecycle":
                self.bucket_types.add("purchase")
            if not isinstance(part, MetricCompare):
                continue
            metric = part.metric
            if not metric.reads_raw_events:
                self.bucket_types.add(metric.event)
                continue
            reach = None if metric.window is None else metric.window.seconds
            self.selections.setdefault(metric.event, set()).add((reach, metric.where))
            if metric.event in self.event_lookback:
                known = self.event_lookback[metric.event]
                reach = None if known is None or reach is None else max(known, reach)
            self.event_lookback[metric.event] = reach
            if metric.field not in (None, "amount"):
                self.properties[metric.event] = None
            elif metric.where and (read := self.properties.get(metric.event, set())) is not None:
                self.properties[metric.event] = {*read, metric.where}

    @classmethod
    def of(cls, nodes: Iterable[Node]) -> Needs:
        needs = cls()
        for node in nodes:
            needs.add(node)
        return needs


async def load_facts(
    session: AsyncSession, program_id: int, member_ids: Sequence[int], needs: Needs, now: datetime
) -> dict[int, MemberFacts]:
    """The facts of the program's members among `member_ids` (members of other programs are left out)."""
    if not member_ids:
        return {}
    ids = sorted(set(member_ids))
    dialect = dialect_of(session)
    await session.flush()  # what follows reads through the connection: Core rows, no ORM layer
    connection = await session.connection()
    organization = (
        select(Organization.external_id).where(Organization.id == Member.organization_id).scalar_subquery()
    )
    rows = await _rows(
        connection,
        select(
            Member.id,
            Member.external_id,
            Member.kind,
            organization,
            Member.attributes,
            Member.points_balance,
            Member.created_at,
            Member.joined_at,
            Member.rfm_r,
            Member.rfm_f,
            Member.rfm_m,
            Member.rfm_label,
            Member.abc_class,
            Member.churn_risk_7d,
        ).where(Member.program_id == program_id, in_values(Member.id, ids, dialect)),
    )
    facts: dict[int, MemberFacts] = {}
    for row in rows:
        (member_id, external_id, kind, org, attributes, balance, created_at, joined_at, *scores) = row
        r, f, m, label, abc_class, churn_risk_7d = scores
        facts[member_id] = MemberFacts(
            member_id=member_id,
            external_id=external_id,
            kind=kind,
            organization=org,
            attributes=attributes,
            points_balance=balance,
            created_at=created_at,
            joined_at=joined_at,
            rfm=None if r is None else (r, f, m, label),
            abc_class=abc_class,
            churn_risk_7d=churn_risk_7d,
            buckets={},
            events={},
        )
    for member_id, key, source in await _rows(
        connection,
        select(MemberTag.member_id, MemberTag.key, MemberTag.source).where(
            in_values(MemberTag.member_id, ids, dialect)
        ),
    ):
        facts[member_id].tag_sources.setdefault(key, set()).add(source)
    for member_id, key in await _rows(
        connection,
        select(SegmentMembership.member_id, Segment.key)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(in_values(SegmentMembership.member_id, ids, dialect)),
    ):
        facts[member_id].segments.add(key)
    for member_facts in facts.values():
        member_facts.tags = frozenset(member_facts.tag_sources)
    await _load_buckets(connection, ids, needs, facts)
    await _load_events(connection, program_id, ids, needs, now, facts)
    return facts


async def _rows(connection: AsyncConnection, statement: Executable) -> Sequence[Any]:
    """All rows at once (one fetch, not one call per row)."""
    rows: Sequence[Any] = (await connection.execute(statement)).all()
    return rows


def _instants(column: Any, dialect: str) -> Any:
    """A UTC timestamp column as asyncpg returns it (aware, UTC) on PostgreSQL, skipping the
    per-value conversion of `UtcDateTime`; SQLite needs that conversion."""
    return type_coerce(column, DateTime(timezone=True)) if dialect == "postgresql" else column


async def _load_buckets(
    connection: AsyncConnection, ids: list[int], needs: Needs, facts: dict[int, MemberFacts]
) -> None:
    if not needs.bucket_types:
        return
    dialect = connection.dialect.name
    found: dict[int, dict[str, list[Bucket]]] = defaultdict(lambda: defaultdict(list))
    table = EventAggregate
    rows = await _rows(
        connection,
        select(
            table.member_id,
            table.event_type,
            table.day,
            table.count,
            table.amount_count,
            table.amount_sum,
            table.amount_min,
            table.amount_max,
            _instants(table.first_at, dialect),
            _instants(table.last_at, dialect),
        ).where(
            in_values(table.member_id, ids, dialect),
            in_values(table.event_type, sorted(needs.bucket_types), dialect),
        ),
    )
    for member_id, event_type, *values in rows:
        found[member_id][event_type].append(Bucket(*values))
    for member_id, by_type in found.items():
        if member_id in facts:
            facts[member_id].buckets = dict(by_type)


def _where(dialect: str, where: Where) -> ColumnElement[bool]:
    """The events a metric's `where` selects, with the evaluator's type-strict equality."""
    return and_(
        true(), *(JsonPath(dialect, _events.c.properties, name).equals(value) for name, value in where)
    )


def _selected(dialect: str, needs: Needs, now: datetime) -> ColumnElement[bool]:
    """The raw events some metric reads: of its type, inside its window, passing its `where`."""
    return or_(
        false(),
        *(
            and_(
                Event.type == event_type,
                true() if seconds is None else Event.occurred_at > now - timedelta(seconds=seconds),
                _where(dialect, where),
            )
            for event_type, chosen in sorted(needs.selections.items())
            for seconds, where in sorted(chosen, key=repr)
        ),
    )


def _properties(dialect: str, needs: Needs) -> Any:
    """The properties column where a metric reads it, NULL elsewhere (nothing to decode)."""
    read = [
        and_(
            Event.type == event_type,
            true()
            if filters is None
            else or_(false(), *(_where(dialect, w) for w in sorted(filters, key=repr))),
        )
        for event_type, filters in sorted(needs.properties.items())
    ]
    return case((or_(*read), Event.properties)) if read else null()


async def _load_events(
    connection: AsyncConnection,
    program_id: int,
    ids: list[int],
    needs: Needs,
    now: datetime,
    facts: dict[int, MemberFacts],
) -> None:
    if not needs.event_lookback:
        return
    dialect = connection.dialect.name
    found: dict[int, dict[str, list[EventFact]]] = defaultdict(lambda: defaultdict(list))
    rows = await _rows(
        connection,
        select(
            Event.member_id,
            Event.type,
            _instants(Event.occurred_at, dialect),
            type_coerce(Event.amount, BigInteger),  # the stored units, not a Decimal
            _properties(dialect, needs),
        ).where(
            Event.program_id == program_id,
            in_values(Event.member_id, ids, dialect),
            Event.status == "ACCEPTED",
            not_refunded(Event),
            _selected(dialect, needs, now),
        ),
    )
    empty: dict[str, Any] = {}  # shared: nothing writes to an event's properties
    for member_id, event_type, occurred_at, units, props in rows:
        found[member_id][event_type].append(EventFact(occurred_at, units, empty if props is None else props))
    for member_id, by_type in found.items():
        if member_id in facts:
            facts[member_id].events = dict(by_type)
