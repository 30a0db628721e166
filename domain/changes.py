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
