"""Loading `MemberFacts` for a set of members: a fixed number of queries, whatever the conditions.

`Needs` says which event types' buckets and raw events the conditions read, how
far back, and which raw events a `where` filter leaves out; `load_facts` reads
exactly that for many members at once: five plain column SELECTs (member rows,
tags, memberships, buckets, raw events; built once and reused, `fact_queries.py`),
the member ids as one array on PostgreSQL (`domain.db.arrays`), no ORM entities.
Raw events carry their properties only where a metric reads them (`where`, a
property field).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.db.arrays import dialect_of
from domain.segments import fact_queries as queries
from domain.segments.conditions import AttrCompare, MetricCompare, Node, typed_where, walk
from domain.segments.evaluate import Bucket, EventFact, MemberFacts, reads_raw
from domain.segments.fact_queries import Shape, Where


def _longest(reach: int | None) -> float:
    return math.inf if reach is None else reach


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
    #: Version 2: the program's timezone; outside UTC, local-day aggregates read raw events.
    zone: tzinfo = UTC

    def add(self, node: Node) -> None:
        for part in walk(node):
            if isinstance(part, AttrCompare) and part.path == "lifecycle":
                self.bucket_types.add("purchase")
            if not isinstance(part, MetricCompare):
                continue
            metric = part.metric
            if not reads_raw(metric, self.zone):
                self.bucket_types.add(metric.event)
                continue
            reach = None if metric.window is None else metric.window.seconds
            where = typed_where(metric.where)  # a key: True and 1 must stay apart
            self._select(metric.event, reach, where)
            if metric.event in self.event_lookback:
                known = self.event_lookback[metric.event]
                reach = None if known is None or reach is None else max(known, reach)
            self.event_lookback[metric.event] = reach
            if metric.field not in (None, "amount"):
                self.properties[metric.event] = None
            elif where and (read := self.properties.get(metric.event, set())) is not None:
                self.properties[metric.event] = {*read, where}

    def _select(self, event_type: str, reach: int | None, where: Where) -> None:
        """Add a selection; keep per filter the longest reach, and no filtered one the unfiltered covers."""
        longest: dict[Where, float] = {where: _longest(reach)}
        for known, filtered in self.selections.get(event_type, ()):
            longest[filtered] = max(longest.get(filtered, -1.0), _longest(known))
        covered = longest.get((), -1.0)
        self.selections[event_type] = {
            (None if seconds == math.inf else int(seconds), filtered)
            for filtered, seconds in longest.items()
            if not filtered or seconds > covered
        }

    def shape(self) -> Shape:
        """The raw-event reads as a hashable value (the key of their statement)."""
        return (
            tuple((t, tuple(sorted(chosen, key=repr))) for t, chosen in sorted(self.selections.items())),
            tuple(
                (t, None if read is None else tuple(sorted(read, key=repr)))
                for t, read in sorted(self.properties.items())
            ),
        )

    @classmethod
    def of(cls, nodes: Iterable[Node], zone: tzinfo = UTC) -> Needs:
        needs = cls(zone=zone)
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
    keys = {"program_id": program_id, "ids": ids}
    facts: dict[int, MemberFacts] = {}
    for row in await _rows(connection, queries.members(dialect), keys):
        (member_id, external_id, kind, org, attributes, balance, created_at, joined_at, *scores) = row
        r, f, m, label, abc_class, churn_risk_7d, channels = scores
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
            channels=tuple(channels or ()),
        )
    for member_id, key, source in await _rows(connection, queries.tags(dialect), keys):
        if member_id in facts:
            facts[member_id].tag_sources.setdefault(key, set()).add(source)
    for member_id, key in await _rows(connection, queries.memberships(dialect), keys):
        if member_id in facts:
            facts[member_id].segments.add(key)
    for member_facts in facts.values():
        member_facts.tags = frozenset(member_facts.tag_sources)
    if needs.bucket_types:
        await _load_buckets(connection, {**keys, "types": sorted(needs.bucket_types)}, facts)
    if needs.selections:
        reaches = {
            seconds for chosen in needs.selections.values() for seconds, _ in chosen if seconds is not None
        }
        windows = {queries.since(seconds): now - timedelta(seconds=seconds) for seconds in reaches}
        await _load_events(connection, queries.events(dialect, needs.shape()), {**keys, **windows}, facts)
    return facts


async def _rows(
    connection: AsyncConnection, statement: Executable, parameters: Mapping[str, Any]
) -> Sequence[Any]:
    """All rows at once (one fetch, not one call per row)."""
    rows: Sequence[Any] = (await connection.execute(statement, dict(parameters))).all()
    return rows


async def _load_buckets(
    connection: AsyncConnection, parameters: Mapping[str, Any], facts: dict[int, MemberFacts]
) -> None:
    found: dict[int, dict[str, list[Bucket]]] = defaultdict(lambda: defaultdict(list))
    for member_id, event_type, *values in await _rows(
        connection, queries.buckets(connection.dialect.name), parameters
    ):
        found[member_id][event_type].append(Bucket(*values))
    for member_id, by_type in found.items():
        if member_id in facts:
            facts[member_id].buckets = dict(by_type)


async def _load_events(
    connection: AsyncConnection,
    statement: Executable,
    parameters: Mapping[str, Any],
    facts: dict[int, MemberFacts],
) -> None:
    found: dict[int, dict[str, list[EventFact]]] = defaultdict(lambda: defaultdict(list))
    empty: dict[str, Any] = {}  # shared: nothing writes to an event's properties
    for member_id, event_type, occurred_at, units, props in await _rows(connection, statement, parameters):
        found[member_id][event_type].append(EventFact(occurred_at, units, empty if props is None else props))
    for member_id, by_type in found.items():
        if member_id in facts:
            facts[member_id].events = dict(by_type)
