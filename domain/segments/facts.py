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

from sqlalchemy import (
    BigInteger,
    Executable,
    and_,
    case,
    false,
    literal,
    null,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.db.types import UtcDateTime
from domain.events.refunds import not_refunded
from domain.events.writes import ORG_TREES_CACHE
from domain.members.organizations import ancestors, subtrees
from domain.models import Event, Member, Organization
from domain.segments import fact_queries as queries
from domain.segments.conditions import (
    PROPERTY_AGGS,
    AttrCompare,
    InOrganizationTree,
    LedgerKind,
    Metric,
    Node,
    OrgMetricCompare,
    node_ledgers,
    node_metrics,
    typed_where,
    walk,
)
from domain.segments.evaluate import Bucket, EventFact, LedgerFact, LotFact, MemberFacts, reads_raw
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
    #: Ledger entries (version 2): whether any are read, and how many seconds back (None: all).
    ledger: bool = False
    ledger_lookback: int | None = 0
    #: Open expiry lots (`points_expiring`).
    lots: bool = False
    #: `org.AGG` roll-ups: raw events of the organization trees by type, seconds back or None.
    org_lookback: dict[str, int | None] = field(default_factory=dict)
    #: Whether a condition reads the organizations above the member's (`in_organization`).
    org_ancestors: bool = False
    #: `org.AGG` event types whose properties a roll-up reads (a `where`, a property field).
    org_properties: set[str] = field(default_factory=set)
    #: Version 2: the program's timezone; outside UTC, local-day aggregates read raw events.
    zone: tzinfo = UTC

    def add(self, node: Node) -> None:
        self.add_organizations(node)
        for part in walk(node):
            if isinstance(part, AttrCompare) and part.path == "lifecycle":
                self.bucket_types.add("purchase")
            for ledger in node_ledgers(part):
                if ledger.kind == LedgerKind.EXPIRING:
                    self.lots = True
                    continue
                reach = None if ledger.window is None else ledger.window.seconds
                known = self.ledger_lookback if self.ledger else 0
                self.ledger = True
                self.ledger_lookback = None if known is None or reach is None else max(known, reach)
            for metric in node_metrics(part):
                self.add_metric(metric)

    def add_metric(self, metric: Metric) -> None:
        if not reads_raw(metric, self.zone):
            self.bucket_types.add(metric.event)
            return
        reach = None if metric.window is None else metric.window.seconds
        where = typed_where(metric.where)  # a key: True and 1 must stay apart
        self._select(metric.event, reach, where)
        if metric.event in self.event_lookback:
            known = self.event_lookback[metric.event]
            reach = None if known is None or reach is None else max(known, reach)
        self.event_lookback[metric.event] = reach
        if metric.field not in (None, "amount") or metric.agg in PROPERTY_AGGS:
            self.properties[metric.event] = None
        elif where and (read := self.properties.get(metric.event, set())) is not None:
            self.properties[metric.event] = {*read, where}

    def add_organizations(self, node: Node) -> None:
        """What the organization leaves read: the hierarchy, and the trees' events by type."""
        for part in walk(node):
            if isinstance(part, InOrganizationTree):
                self.org_ancestors = True
            if isinstance(part, OrgMetricCompare):
                metric = part.metric
                reach = None if metric.window is None else metric.window.seconds
                if metric.event in self.org_lookback:
                    known = self.org_lookback[metric.event]
                    reach = None if known is None or reach is None else max(known, reach)
                self.org_lookback[metric.event] = reach
                if metric.where or metric.field not in (None, "amount"):
                    self.org_properties.add(metric.event)

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
    if needs.org_ancestors or needs.org_lookback:
        trees = session.info.setdefault(ORG_TREES_CACHE, {})
        await load_organization_facts(connection, program_id, needs, facts, now, trees)
    if needs.bucket_types:
        await _load_buckets(connection, {**keys, "types": sorted(needs.bucket_types)}, facts)
    if needs.selections:
        reaches = {
            seconds for chosen in needs.selections.values() for seconds, _ in chosen if seconds is not None
        }
        windows = {queries.since(seconds): now - timedelta(seconds=seconds) for seconds in reaches}
        await _load_events(connection, queries.events(dialect, needs.shape()), {**keys, **windows}, facts)
    if needs.ledger:
        await _load_ledger(connection, queries.ledger(dialect), needs.ledger_lookback, keys, now, facts)
    if needs.lots:
        found: dict[int, list[LotFact]] = defaultdict(list)
        for member_id, expires_at, remaining in await _rows(connection, queries.lots(dialect), keys):
            found[member_id].append(LotFact(expires_at, remaining))
        for member_id, lots in found.items():
            if member_id in facts:
                facts[member_id].lots = lots
    return facts


async def _load_ledger(
    connection: AsyncConnection,
    statement: Executable,
    lookback: int | None,
    keys: Mapping[str, Any],
    now: datetime,
    facts: dict[int, MemberFacts],
) -> None:
    """The entries the ledger operands count, dated when they count, since `now - lookback`."""
    since = datetime(1, 1, 2, tzinfo=UTC) if lookback is None else now - timedelta(seconds=lookback)
    found: dict[int, list[LedgerFact]] = defaultdict(list)
    for member_id, at, points, kind in await _rows(connection, statement, {**keys, "since": since}):
        found[member_id].append(LedgerFact(at, points, kind))
    for member_id, entries in found.items():
        if member_id in facts:
            facts[member_id].ledger = entries


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


async def load_organization_facts(
    connection: AsyncConnection,
    program_id: int,
    needs: Needs,
    facts: dict[int, MemberFacts],
    now: datetime,
    cache: dict[Any, dict[int, dict[str, list[EventFact]]]] | None = None,
) -> None:
    """The members' organizations above theirs, and the events of their organization trees.

    Two queries: the program's hierarchy (organizations are few), then the raw events of
    the types the roll-ups read, of every member below the members' organizations, each
    type as far back as its longest window. Members of one organization share its lists.
    `cache` (the session's; `insert_events` empties it) keeps the trees read at `now` for
    the same needs: the engine's second pass over the members the fan-out reached reads
    only the trees the first did not.
    """
    rows = await _rows(
        connection,
        select(Organization.id, Organization.external_id, Organization.parent_id).where(
            Organization.program_id == program_id
        ),
        {},
    )
    parents: dict[int, int | None] = {org_id: parent for org_id, _, parent in rows}
    external = {org_id: external_id for org_id, external_id, _ in rows}
    by_external = {external_id: org_id for org_id, external_id, _ in rows}
    roots = {by_external[m.organization] for m in facts.values() if m.organization in by_external}
    if needs.org_ancestors:
        above = {root: frozenset(external[a] for a in ancestors(parents, [root])) for root in roots}
        for member in facts.values():
            if member.organization in by_external:
                member.organization_ancestors = above[by_external[member.organization]]
    if not needs.org_lookback or not roots:
        return
    key = (program_id, now, tuple(sorted(needs.org_lookback.items())), tuple(sorted(needs.org_properties)))
    cache = {} if cache is None else cache
    if key not in cache:
        cache.clear()  # one instant and shape at a time
        cache[key] = {}
    known = cache[key]
    missing = roots - set(known)
    if missing:
        known.update(await _read_trees(connection, program_id, needs, parents, missing, now))
    for member in facts.values():
        if member.organization in by_external:
            member.organization_events = known[by_external[member.organization]]


async def _read_trees(
    connection: AsyncConnection,
    program_id: int,
    needs: Needs,
    parents: dict[int, int | None],
    roots: set[int],
    now: datetime,
) -> dict[int, dict[str, list[EventFact]]]:
    """Per root, the raw events of the roll-ups' types of every member of its tree: one query."""
    below = subtrees(parents, roots)
    wanted = sorted(set().union(*below.values()))
    dialect = connection.dialect.name
    windows = [
        and_(
            Event.type == event_type,
            true()
            if seconds is None
            else Event.occurred_at > literal(now - timedelta(seconds=seconds), UtcDateTime()),
        )
        for event_type, seconds in sorted(needs.org_lookback.items())
    ]
    statement = (
        select(
            Member.organization_id,
            Event.type,
            queries.instants(Event.occurred_at, dialect),
            type_coerce(Event.amount, BigInteger),
            case((Event.type.in_(sorted(needs.org_properties)), Event.properties))
            if needs.org_properties
            else null(),
        )
        .join(Member, Member.id == Event.member_id)
        .where(
            Event.program_id == program_id,
            in_values(Member.organization_id, wanted, dialect),
            Event.status == "ACCEPTED",
            not_refunded(Event),
            or_(false(), *windows),
        )
    )
    by_org: dict[int, dict[str, list[EventFact]]] = defaultdict(lambda: defaultdict(list))
    empty: dict[str, Any] = {}  # shared: nothing writes to an event's properties
    for org_id, event_type, occurred_at, units, props in await _rows(connection, statement, {}):
        by_org[org_id][event_type].append(EventFact(occurred_at, units, props or empty))
    trees: dict[int, dict[str, list[EventFact]]] = {}
    for root, orgs in below.items():
        merged: dict[str, list[EventFact]] = defaultdict(list)
        for org_id in orgs:
            for event_type, found in by_org.get(org_id, {}).items():
                merged[event_type].extend(found)
        trees[root] = dict(merged)
    return trees
