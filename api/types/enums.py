"""The contract's enums are the domain's vocabularies, registered with strawberry here."""

from __future__ import annotations

import strawberry

from domain.enums import (
    AbcClass,
    AccrualStatus,
    Channel,
    EntryKind,
    EventStatus,
    LifecycleStage,
    MemberKind,
    MembershipChange,
    ProgramKind,
    SegmentKind,
)

for _enum in (
    ProgramKind,
    MemberKind,
    Channel,
    EventStatus,
    AccrualStatus,
    SegmentKind,
    MembershipChange,
    AbcClass,
    LifecycleStage,
):
    strawberry.enum(_enum)
strawberry.enum(EntryKind, description="What moved the points (beyond the contract)")

__all__ = [
    "AbcClass",
    "AccrualStatus",
    "Channel",
    "EntryKind",
    "EventStatus",
    "LifecycleStage",
    "MemberKind",
    "MembershipChange",
    "ProgramKind",
    "SegmentKind",
]
