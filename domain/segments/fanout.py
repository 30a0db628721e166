"""The fan-out of `org.AGG` roll-ups: whose segments an event of one member may flip.

A member's roll-up covers the events of its organization and of every
organization below it. An event of member M therefore moves the roll-ups of
every member whose organization is M's or one above it. `org_fan_out` finds
them set-based, in three queries whatever the batch: the changed members'
organizations, the program's hierarchy (organizations are few), and the
members of the organizations above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.members.organizations import ancestors, parent_map
from domain.models import Member
from domain.segments.index import Definition, SegmentIndex


async def org_fan_out(
    session: AsyncSession,
    program_id: int,
    index: SegmentIndex,
    event_types: Mapping[int, frozenset[str]],
) -> dict[int, list[Definition]]:
    """Per member whose roll-ups the accepted events moved: the segments to re-evaluate."""
    org_types = {t for d in index.ordered for t in d.org_event_types}
    movers = {m: types & org_types for m, types in event_types.items() if types & org_types}
    if not movers:
        return {}
    dialect = dialect_of(session)
    rows: Any = await session.execute(
        select(Member.id, Member.organization_id).where(
            in_values(Member.id, sorted(movers), dialect), Member.organization_id.is_not(None)
        )
    )
    types_by_org: dict[int, set[str]] = {}
    for member_id, org_id in rows:
        types_by_org.setdefault(org_id, set()).update(movers[member_id])
    if not types_by_org:
        return {}
    parents = await parent_map(session, program_id)
    reached: dict[int, set[str]] = {}
    for org_id, types in types_by_org.items():
        for above in ancestors(parents, [org_id]):
            reached.setdefault(above, set()).update(types)
    rows = await session.execute(
        select(Member.id, Member.organization_id).where(
            Member.program_id == program_id, in_values(Member.organization_id, sorted(reached), dialect)
        )
    )
    plans: dict[int, list[Definition]] = {}
    cache: dict[frozenset[str], list[Definition]] = {}
    for member_id, org_id in rows:
        key = frozenset(reached[org_id])
        if key not in cache:
            cache[key] = index.org_affected(key)
        if cache[key]:
            plans[member_id] = cache[key]
    return plans


def merged(index: SegmentIndex, *plans: list[Definition]) -> list[Definition]:
    """The union of plans, in the index's dependency order."""
    keys = {d.key for plan in plans for d in plan}
    return [d for d in index.ordered if d.key in keys]
