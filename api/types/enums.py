"""The contract's enums are the domain's vocabularies, registered with strawberry here."""

from __future__ import annotations

import strawberry

from domain.enums import AccrualStatus, Channel, EntryKind, EventStatus, MemberKind, ProgramKind

for _enum in (ProgramKind, MemberKind, Channel, EventStatus, AccrualStatus):
    strawberry.enum(_enum)
strawberry.enum(EntryKind, description="What moved the points (beyond the contract)")

__all__ = ["AccrualStatus", "Channel", "EntryKind", "EventStatus", "MemberKind", "ProgramKind"]
