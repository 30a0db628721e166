"""What a unit of work changed about members, told to in-transaction listeners (the segment engine).

Services that move member data (events, upserts, balances) report it here, inside
their transaction, so that segment membership commits together with its cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


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

    @property
    def member_ids(self) -> set[int]:
        return set(self.event_types) | self.profiles | self.balances | self.created


class ChangeListener(Protocol):
    async def members_changed(self, session: AsyncSession, change: MembersChanged, now: datetime) -> None: ...


class NoListener:
    async def members_changed(self, session: AsyncSession, change: MembersChanged, now: datetime) -> None:
        return None


class ChangeListeners:
    """Several listeners told in order, e.g. the segment engine, then what builds on its results."""

    def __init__(self, *listeners: ChangeListener) -> None:
        self.listeners = listeners

    async def members_changed(self, session: AsyncSession, change: MembersChanged, now: datetime) -> None:
        for listener in self.listeners:
            await listener.members_changed(session, change, now)


@dataclass(frozen=True)
class LoggedChange:
    """One row of the segment change log, as written in the current transaction."""

    change_id: int
    segment_id: int
    segment_key: str
    member_id: int
    entered: bool


class SegmentChangeListener(Protocol):
    """Told, inside the transaction, of every membership change the segment engine logs (triggers)."""

    async def watched(self, session: AsyncSession, program_id: int) -> frozenset[int]:
        """The segments whose changes the listener wants (batch recomputes list only those)."""
        ...

    async def segments_changed(
        self, session: AsyncSession, program_id: int, changes: Sequence[LoggedChange], now: datetime
    ) -> None: ...


class SegmentChangeListeners:
    """Several segment-change listeners (triggers, segment-scoped leaderboards), told in order."""

    def __init__(self, *listeners: SegmentChangeListener) -> None:
        self.listeners = listeners

    async def watched(self, session: AsyncSession, program_id: int) -> frozenset[int]:
        watched: frozenset[int] = frozenset()
        for listener in self.listeners:
            watched |= await listener.watched(session, program_id)
        return watched

    async def segments_changed(
        self, session: AsyncSession, program_id: int, changes: Sequence[LoggedChange], now: datetime
    ) -> None:
        for listener in self.listeners:
            await listener.segments_changed(session, program_id, changes, now)
