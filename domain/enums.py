"""Closed vocabularies of the domain, stored as their string values."""

from __future__ import annotations

from enum import StrEnum


class ProgramKind(StrEnum):
    B2C = "B2C"
    B2B = "B2B"
    B2E = "B2E"


class MemberKind(StrEnum):
    CUSTOMER = "CUSTOMER"
    DEALER = "DEALER"
    EMPLOYEE = "EMPLOYEE"


class Channel(StrEnum):
    SMS = "SMS"
    PUSH = "PUSH"
    EMAIL = "EMAIL"
    IN_APP = "IN_APP"


class AdminRole(StrEnum):
    """What an admin user may do (DESIGN.md, "Privacy and governance"); domain/auth/policy.py
    maps each role to its scopes."""

    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MARKETER = "MARKETER"
    REVIEWER = "REVIEWER"
    VIEWER = "VIEWER"


class EventStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    HELD_FOR_REVIEW = "HELD_FOR_REVIEW"
    BLOCKED = "BLOCKED"
    REJECTED = "REJECTED"


class AccrualStatus(StrEnum):
    POSTED = "POSTED"
    PENDING_REVIEW = "PENDING_REVIEW"
    REJECTED = "REJECTED"
    REVERSED = "REVERSED"


class EntryKind(StrEnum):
    ACCRUAL = "ACCRUAL"
    REDEMPTION = "REDEMPTION"
    REVERSAL = "REVERSAL"
    ADJUSTMENT = "ADJUSTMENT"
    EXPIRY = "EXPIRY"


class Verdict(StrEnum):
    ALLOW = "ALLOW"
    REVIEW = "REVIEW"
    BLOCK = "BLOCK"


class SegmentKind(StrEnum):
    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"
    COMPUTED = "COMPUTED"
    #: One segment per tier of the program's ladder (`tier-<key>`), kept by the tier rules, never by users.
    TIER = "TIER"


class TierDowngrade(StrEnum):
    """What happens when a member's grace period ends below its tier's threshold."""

    NEVER = "NEVER"
    ONE_DOWN = "ONE_DOWN"
    RECALCULATE = "RECALCULATE"


class MembershipChange(StrEnum):
    ENTERED = "ENTERED"
    LEFT = "LEFT"


class AbcClass(StrEnum):
    A = "A"
    B = "B"
    C = "C"


class LifecycleStage(StrEnum):
    NEW = "NEW"
    ACTIVE = "ACTIVE"
    AT_RISK = "AT_RISK"
    LOST = "LOST"
