"""Warnings about a condition that is valid but likely wrong (beyond the contract).

`count(vist, 30d)` parses, yet no member ever has a `vist`: the segment is silently
empty. `condition_warnings` names every event type a condition reads that the
program never recorded (no accepted event of it) and every attribute path no
member has. One SELECT of EXISTS probes, each an index lookup for event types
(event_aggregates by program and type); a path no member has costs a scan of the
program's members, as counting the segment does anyway.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import EventAggregate, Member
from domain.segments.conditions import BUILTIN_PATHS, AttrCompare, MetricCompare, Node, OrgMetricCompare, walk
from domain.segments.sqljson import JsonPath

_members = cast(Table, Member.__table__)
#: At most this many probes of each kind (a condition has at most 500 nodes).
MAX_PROBES = 50


def read_event_types(node: Node) -> list[str]:
    """The event types the condition's metrics read, sorted."""
    found = {n.metric.event for n in walk(node) if isinstance(n, (MetricCompare, OrgMetricCompare))}
    return sorted(found)[:MAX_PROBES]


def read_paths(node: Node) -> list[str]:
    """The free-form attribute paths the condition reads (not the built-ins), sorted."""
    found = {n.path for n in walk(node) if isinstance(n, AttrCompare) and n.path not in BUILTIN_PATHS}
    return sorted(found)[:MAX_PROBES]


async def condition_warnings(session: AsyncSession, program_id: int, node: Node) -> list[str]:
    """Human-readable warnings, event types first, each sorted; empty when nothing looks wrong."""
    types = read_event_types(node)
    paths = read_paths(node)
    if not types and not paths:
        return []
    dialect = session.get_bind().dialect.name
    probes: list[Any] = [
        exists().where(EventAggregate.program_id == program_id, EventAggregate.event_type == t) for t in types
    ]
    probes += [
        exists().where(
            _members.c.program_id == program_id,
            JsonPath(dialect, _members.c.attributes, p).type_is("present"),
        )
        for p in paths
    ]
    found = (await session.execute(select(*probes))).one()
    warnings = [
        f"event type {t!r} was never recorded in this program (a typo? the condition counts none of it)"
        for t, present in zip(types, found[: len(types)], strict=True)
        if not present
    ]
    warnings += [
        f"attribute {p!r} is held by no member (a typo? comparisons with it are false for everyone)"
        for p, present in zip(paths, found[len(types) :], strict=True)
        if not present
    ]
    return warnings


def _held(dialect: str, path: str) -> Any:
    return JsonPath(dialect, _members.c.attributes, path).type_is("present")
