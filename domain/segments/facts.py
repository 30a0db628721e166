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
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.events.refunds import not_refunded
from domain.models import Event, EventAggregate, Member, MemberTag, Organization, Segment, SegmentMembership
from domain.segments.conditions import AttrCompare, MetricCompare, Node, Scalar, walk
from domain.segments.evaluate import Bucket, EventFact, MemberFacts
from domain.segments.sqljson import JsonPath

_events = cast(Table, Event.__table__)
#: Per event type, the `where` filters of the metrics reading its raw events; None: all of them.
Filters = dict[str, set[tuple[tuple[str, Scalar], ...]] | None]


@dataclass
class Needs:
    bucket_types: set[str] = field(default_factory=set)
    #: Raw events by type: how many seconds back, None for the whole history.
    event_lookback: dict[str, int | None] = field(default_factory=dict)
    #: Raw events by type: the `where` filters that select them (None: every event of the type).
    event_filters: Filters = field(default_factory=dict)
    #: Types whose raw events' properties a metric reads (a `where` or a property field).
    property_types: set[str] = field(default_factory=set)

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
            if metric.event in self.event_lookback:
                known = self.event_lookback[metric.event]
                reach = None if known is None or reach is None else max(known, reach)
            self.event_lookback[metric.event] = reach
            filters = self.event_filters.get(metric.event, set())
            if filters is not None:
                self.event_filters[metric.event] = {*filters, metric.where} if metric.where else None
            if metric.where or metric.field not in (None, "amount"):
                self.property_types.add(metric.event)

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
    organization = (
        select(Organization.external_id).where(Organization.id == Member.organization_id).scalar_subquery()
    )
    rows = await session.execute(
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
        ).where(Member.program_id == program_id, in_values(Member.id, ids, dialect))
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
    for member_id, key, source in await session.execute(
        select(MemberTag.member_id, MemberTag.key, MemberTag.source).where(
            in_values(MemberTag.member_id, ids, dialect)
        )
    ):
        facts[member_id].tag_sources.setdefault(key, set()).add(source)
    for member_id, key in await session.execute(
        select(SegmentMembership.member_id, Segment.key)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(in_values(SegmentMembership.member_id, ids, dialect))
    ):
        facts[member_id].segments.add(key)
    for member_facts in facts.values():
        member_facts.tags = frozenset(member_facts.tag_sources)
    await _load_buckets(session, ids, needs, facts)
    await _load_events(session, program_id, ids, needs, now, facts)
    return facts


def _instants(column: Any, dialect: str) -> Any:
    """A UTC timestamp column as asyncpg returns it (aware, UTC) on PostgreSQL, skipping the
    per-value conversion of `UtcDateTime`; SQLite needs that conversion."""
    return type_coerce(column, DateTime(timezone=True)) if dialect == "postgresql" else column


async def _load_buckets(
    session: AsyncSession, ids: list[int], needs: Needs, facts: dict[int, MemberFacts]
) -> None:
    if not needs.bucket_types:
        return
    dialect = dialect_of(session)
    found: dict[int, dict[str, list[Bucket]]] = defaultdict(lambda: defaultdict(list))
    table = EventAggregate
    rows = await session.execute(
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
        )
    )
    for member_id, event_type, *values in rows:
        found[member_id][event_type].append(Bucket(*values))
    for member_id, by_type in found.items():
        if member_id in facts:
            facts[member_id].buckets = dict(by_type)


def _where(dialect: str, filters: set[tuple[tuple[str, Scalar], ...]] | None) -> ColumnElement[bool]:
    """Events that at least one of the filters selects (the evaluator applies each metric's own)."""
    if filters is None:
        return true()
    return or_(
        false(),
        *(
            and_(*(JsonPath(dialect, _events.c.properties, name).equals(value) for name, value in where))
            for where in sorted(filters, key=repr)
        ),
    )


async def _load_events(
    session: AsyncSession,
    program_id: int,
    ids: list[int],
    needs: Needs,
    now: datetime,
    facts: dict[int, MemberFacts],
) -> None:
    if not needs.event_lookback:
        return
    dialect = dialect_of(session)
    reach = []
    for event_type, seconds in sorted(needs.event_lookback.items(), key=lambda item: item[0]):
        recent = true() if seconds is None else Event.occurred_at > now - timedelta(seconds=seconds)
        reach.append(
            and_(Event.type == event_type, recent, _where(dialect, needs.event_filters.get(event_type)))
        )
    readers = sorted(needs.property_types)  # the other types' properties stay in the database
    properties: Any = case((Event.type.in_(readers), Event.properties)) if readers else null()
    found: dict[int, dict[str, list[EventFact]]] = defaultdict(lambda: defaultdict(list))
    rows = await session.execute(
        select(
            Event.member_id,
            Event.type,
            _instants(Event.occurred_at, dialect),
            type_coerce(Event.amount, BigInteger),  # the stored units, not a Decimal
            properties,
        ).where(
            Event.program_id == program_id,
            in_values(Event.member_id, ids, dialect),
            Event.status == "ACCEPTED",
            not_refunded(Event),
            or_(*reach),
        )
    )
    empty: dict[str, Any] = {}  # shared: nothing writes to an event's properties
    for member_id, event_type, occurred_at, units, props in rows:
        found[member_id][event_type].append(EventFact(occurred_at, units, empty if props is None else props))
    for member_id, by_type in found.items():
        if member_id in facts:
            facts[member_id].events = dict(by_type)
