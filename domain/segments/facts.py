"""Loading `MemberFacts` for a set of members: a fixed number of queries, whatever the conditions.

`Needs` says which event types' buckets and raw events the conditions read and how
far back; `load_facts` reads exactly that for many members at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.types import amount_to_units
from domain.events.refunds import not_refunded
from domain.models import Event, EventAggregate, Member, MemberTag, Organization, Segment, SegmentMembership
from domain.segments.conditions import AttrCompare, MetricCompare, Node, walk
from domain.segments.evaluate import Bucket, EventFact, MemberFacts


@dataclass
class Needs:
    bucket_types: set[str] = field(default_factory=set)
    #: Raw events by type: how many seconds back, None for the whole history.
    event_lookback: dict[str, int | None] = field(default_factory=dict)

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

    @classmethod
    def of(cls, nodes: Iterable[Node]) -> Needs:
        needs = cls()
        for node in nodes:
            needs.add(node)
        return needs


async def load_facts(
    session: AsyncSession, program_id: int, member_ids: Sequence[int], needs: Needs, now: datetime
) -> dict[int, MemberFacts]:
    if not member_ids:
        return {}
    ids = sorted(set(member_ids))
    rows = await session.execute(
        select(Member, Organization.external_id)
        .outerjoin(Organization, Organization.id == Member.organization_id)
        .where(Member.program_id == program_id, Member.id.in_(ids))
        .execution_options(populate_existing=True)  # balances move by Core UPDATEs in the same session
    )
    facts: dict[int, MemberFacts] = {}
    for member, organization in rows:
        scores = member.rfm_r, member.rfm_f, member.rfm_m, member.rfm_label
        facts[member.id] = MemberFacts(
            member_id=member.id,
            external_id=member.external_id,
            kind=member.kind,
            organization=organization,
            attributes=member.attributes,
            points_balance=member.points_balance,
            created_at=member.created_at,
            joined_at=member.joined_at,
            rfm=None if member.rfm_r is None else scores,  # type: ignore[arg-type]
            abc_class=member.abc_class,
            churn_risk_7d=member.churn_risk_7d,
            buckets={},
            events={},
        )
    for member_id, key, source in await session.execute(
        select(MemberTag.member_id, MemberTag.key, MemberTag.source).where(MemberTag.member_id.in_(ids))
    ):
        facts[member_id].tag_sources.setdefault(key, set()).add(source)
    for member_id, key in await session.execute(
        select(SegmentMembership.member_id, Segment.key)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(SegmentMembership.member_id.in_(ids))
    ):
        facts[member_id].segments.add(key)
    for member_facts in facts.values():
        member_facts.tags = frozenset(member_facts.tag_sources)
    await _load_buckets(session, ids, needs, facts)
    await _load_events(session, program_id, ids, needs, now, facts)
    return facts


async def _load_buckets(
    session: AsyncSession, ids: list[int], needs: Needs, facts: dict[int, MemberFacts]
) -> None:
    if not needs.bucket_types:
        return
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
            table.first_at,
            table.last_at,
        ).where(table.member_id.in_(ids), table.event_type.in_(sorted(needs.bucket_types)))
    )
    for member_id, event_type, *values in rows:  # plain rows: no ORM identity bookkeeping per bucket
        found[member_id][event_type].append(Bucket(*values))
    for member_id, by_type in found.items():
        facts[member_id].buckets = dict(by_type)


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
    reach = [
        Event.type == event_type
        if seconds is None
        else (Event.type == event_type) & (Event.occurred_at > now - timedelta(seconds=seconds))
        for event_type, seconds in sorted(needs.event_lookback.items(), key=lambda item: item[0])
    ]
    found: dict[int, dict[str, list[EventFact]]] = defaultdict(lambda: defaultdict(list))
    rows = await session.execute(
        select(Event.member_id, Event.type, Event.occurred_at, Event.amount, Event.properties).where(
            Event.program_id == program_id,
            Event.member_id.in_(ids),
            Event.status == "ACCEPTED",
            not_refunded(Event),
            or_(*reach),
        )
    )
    for member_id, event_type, occurred_at, amount, properties in rows:
        units = None if amount is None else amount_to_units(amount)
        found[member_id][event_type].append(EventFact(occurred_at, units, properties))
    for member_id, by_type in found.items():
        facts[member_id].events = dict(by_type)
