"""The domain events of member and segment changes, collected by the unit of work (domain/messagebus.py).

Services that move member data (events, upserts, balances, tags) collect a
`MembersChanged` inside their transaction; the message bus hands it to the
segment engine (and challenges) before the commit, so that segment membership
commits together with its cause. The engine answers with `SegmentsChanged`,
what it logged, which triggers and segment-scoped boards handle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

K = TypeVar("K")
V = TypeVar("V")


def _union(a: Mapping[K, frozenset[V]], b: Mapping[K, frozenset[V]]) -> dict[K, frozenset[V]]:
    out = dict(a)
    for key, values in b.items():
        out[key] = out.get(key, frozenset()) | values
    return out


@dataclass(frozen=True)
class MembersChanged:
    program_id: int
    #: Per member, the types of the events that were accepted for it.
    event_types: Mapping[int, frozenset[str]] = field(default_factory=dict)
    #: Per (member, event type), when those accepted events occurred (backdated ones included).
    occurred: Mapping[tuple[int, str], frozenset[datetime]] = field(default_factory=dict)
    #: Members whose attributes, kind, organization or joinedAt changed.
    profiles: frozenset[int] = frozenset()
    #: Members whose posted balance moved.
    balances: frozenset[int] = frozenset()
    #: Members created in this unit of work: every condition is new to them.
    created: frozenset[int] = frozenset()
    #: Per member, the tags added to or taken off it.
    tags: Mapping[int, frozenset[str]] = field(default_factory=dict)
    #: When it changed: the instant segments are evaluated at.
    at: datetime | None = field(default=None, kw_only=True)
    depth: int = field(default=0, kw_only=True)

    @property
    def member_ids(self) -> set[int]:
        return set(self.event_types) | self.profiles | self.balances | self.created | set(self.tags)

    def merge(self, other: MembersChanged) -> MembersChanged:
        """Both changes as one (same program); the segment engine evaluates each member once."""
        assert other.program_id == self.program_id
        return MembersChanged(
            self.program_id,
            _union(self.event_types, other.event_types),
            _union(self.occurred, other.occurred),
            self.profiles | other.profiles,
            self.balances | other.balances,
            self.created | other.created,
            _union(self.tags, other.tags),
            at=self.at,
            depth=self.depth,
        )


@dataclass(frozen=True)
class LoggedChange:
    """One row of the segment change log, as written in the current transaction."""

    change_id: int
    segment_id: int
    segment_key: str
    member_id: int
    entered: bool


@dataclass(frozen=True)
class SegmentsChanged:
    """Membership changes the segment engine wrote in this transaction (triggers act on them).

    `changes` are the logged rows; a batch recompute lists only those of watched segments
    (`SegmentWatcher`), while `entered` and `left` count them all (the metrics).
    """

    program_id: int
    changes: tuple[LoggedChange, ...]
    at: datetime
    entered: int
    left: int
    depth: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class ProgramCalendarChanged:
    """The program's timezone changed (setProgramTimezone): conditions on local dates must be recomputed."""

    program_id: int
    at: datetime
    depth: int = field(default=0, kw_only=True)


class SegmentWatcher(Protocol):
    """A handler of `SegmentsChanged` that names the segments it acts on (batch recomputes log only those)."""

    async def watched(self, session: AsyncSession, program_id: int) -> frozenset[int]: ...
