"""A program's segment definitions, parsed once, in dependency order, with what each one reads.

The dependency index answers "which segments can this change affect?" so that
an event re-evaluates only the segments that read its type (and those that
read them, through `in_segment` or a tag they apply).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.errors import InvalidInput
from domain.segments.conditions import (
    AttrCompare,
    DateCompare,
    HasTag,
    InOrganization,
    InOrganizationTree,
    InSegment,
    KindIs,
    Node,
    OrgMetricCompare,
    VersionCompare,
    node_ledgers,
    node_metrics,
    parse_condition,
    walk,
)
from domain.segments.horizon import is_time_dependent

PROFILE_PATHS_EXCLUDED = frozenset(
    {"pointsBalance", "lifecycle", "abcClass", "rfm.r", "rfm.f", "rfm.m", "rfm.label", "churnRisk7d"}
)


#: Leaves that read the member's kind or organization (the profile).
PROFILE_NODES = (KindIs, InOrganization, InOrganizationTree, OrgMetricCompare)


@dataclass(frozen=True)
class Definition:
    id: int
    key: str
    kind: str
    condition: Node | None
    applies_tag: str | None
    event_types: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    reads_profile: bool = False
    reads_balance: bool = False
    #: Whether time alone can flip it (`horizon.is_time_dependent`): the scheduler keeps it current.
    time_dependent: bool = False
    #: The event types its `org.AGG` roll-ups read: an event of one member re-evaluates it for every
    #: member of that member's organization and of the organizations above (`SegmentEngine`).
    org_event_types: frozenset[str] = frozenset()

    @classmethod
    def of(cls, id: int, key: str, kind: str, condition: Node | None, applies_tag: str | None) -> Definition:
        nodes = walk(condition) if condition is not None else []
        types = {m.event for n in nodes for m in node_metrics(n)}
        paths = {n.path for n in nodes if isinstance(n, (AttrCompare, DateCompare, VersionCompare))}
        if "lifecycle" in paths:
            types.add("purchase")
        return cls(
            id,
            key,
            kind,
            condition,
            applies_tag,
            frozenset(types),
            frozenset(n.key for n in nodes if isinstance(n, InSegment)),
            frozenset(n.key for n in nodes if isinstance(n, HasTag)),
            reads_profile=bool(paths - PROFILE_PATHS_EXCLUDED)
            or any(isinstance(n, PROFILE_NODES) for n in nodes)
            or "lifecycle" in paths,
            reads_balance="pointsBalance" in paths or any(node_ledgers(n) for n in nodes),
            time_dependent=condition is not None and is_time_dependent(condition),
            org_event_types=frozenset(n.metric.event for n in nodes if isinstance(n, OrgMetricCompare)),
        )


@dataclass
class SegmentIndex:
    """Definitions in an order where every segment comes after those it reads."""

    ordered: list[Definition] = field(default_factory=list)

    @classmethod
    def build(cls, definitions: Iterable[Definition]) -> SegmentIndex:
        return cls(dependency_order(list(definitions)))

    def by_key(self) -> dict[str, Definition]:
        return {d.key: d for d in self.ordered}

    def affected(
        self,
        event_types: Iterable[str] = (),
        profile: bool = False,
        balance: bool = False,
        tags: Iterable[str] = (),
        everything: bool = False,
        segments: Iterable[str] = (),
    ) -> list[Definition]:
        """The DYNAMIC segments whose truth may change, closed over segment and tag references.

        `segments` are keys whose membership may have changed already (a member's TIER segments).
        """
        types, changed_tags = set(event_types), set(tags)
        changed: set[str] = set(segments)
        chosen: list[Definition] = []
        for d in self.ordered:
            if d.kind != "DYNAMIC":
                continue
            if (
                everything
                or d.event_types & types
                or (profile and d.reads_profile)
                or (balance and d.reads_balance)
                or d.segments & changed
                or d.tags & changed_tags
            ):
                chosen.append(d)
                changed.add(d.key)
                if d.applies_tag:
                    changed_tags.add(d.applies_tag)
        return chosen

    def org_affected(self, event_types: Iterable[str]) -> list[Definition]:
        """The DYNAMIC segments whose `org.AGG` roll-ups read one of the types, closed over segment and
        tag references (what an event re-evaluates for the members of the organizations above)."""
        types: set[str] = set(event_types)
        changed: set[str] = set()
        changed_tags: set[str] = set()
        chosen: list[Definition] = []
        for d in self.ordered:
            if d.kind != "DYNAMIC":
                continue
            if d.org_event_types & types or d.segments & changed or d.tags & changed_tags:
                chosen.append(d)
                changed.add(d.key)
                if d.applies_tag:
                    changed_tags.add(d.applies_tag)
        return chosen

    def dependents(self, key: str) -> list[Definition]:
        """Segments that read `key`, directly or through others, in evaluation order."""
        chosen: list[Definition] = []
        changed = {key}
        tags = {d.applies_tag for d in self.ordered if d.key == key and d.applies_tag}
        for d in self.ordered:
            if d.key != key and (d.segments & changed or d.tags & tags) and d.kind != "STATIC":
                chosen.append(d)
                changed.add(d.key)
                if d.applies_tag:
                    tags.add(d.applies_tag)
        return chosen


def dependency_order(definitions: Sequence[Definition]) -> list[Definition]:
    """Topological order (references first); InvalidInput naming the cycle or the missing segment."""
    by_key = {d.key: d for d in definitions}
    appliers: dict[str, list[str]] = {}
    for d in definitions:
        if d.applies_tag:
            appliers.setdefault(d.applies_tag, []).append(d.key)

    def reads(d: Definition) -> list[str]:
        found = sorted(d.segments)
        for tag in sorted(d.tags):
            found.extend(sorted(appliers.get(tag, ())))
        return found

    order: list[Definition] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(key: str, path: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = [*path[path.index(key) :], key]
            raise InvalidInput(f"condition: segments reference each other in a cycle: {' -> '.join(cycle)}")
        state[key] = 1
        for dependency in reads(by_key[key]):
            if dependency not in by_key:
                raise InvalidInput(f"condition: in_segment({dependency!r}) names no segment of this program")
            visit(dependency, [*path, key])
        state[key] = 2
        order.append(by_key[key])

    for d in sorted(definitions, key=lambda d: d.key):  # by key: the same order on every load
        visit(d.key, [])
    return order


def definition_from_row(row: Any) -> Definition:
    condition = parse_condition(row.condition) if row.condition is not None else None
    return Definition.of(row.id, row.key, row.kind, condition, row.applies_tag)
