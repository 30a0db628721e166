"""SQLAlchemy tables: the database is the source of truth.

No relationships are mapped: every read is an explicit query in a repository,
so nothing lazy-loads behind a resolver's back.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.db.types import Amount, BigId, Json, UtcDateTime
from domain.referrals.codes import new_referral_code

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Program(Base):
    __tablename__ = "programs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8))
    settings: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Points earned from now on expire this many days after they were earned; None: never.
    points_expiry_days: Mapped[int | None] = mapped_column(Integer)


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (
        UniqueConstraint("program_id", "external_id"),
        Index("ix_organizations_parent", "parent_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    #: The organization above (a dealer group above a dealer, a branch's dealer); None at the top.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", name="fk_organizations_parent")
    )
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (
        UniqueConstraint("program_id", "external_id"),
        CheckConstraint("points_balance >= 0", name="balance_not_negative"),
        CheckConstraint("pending_points >= 0", name="pending_not_negative"),
        Index("ix_members_organization", "organization_id", "id"),
        Index("ix_members_segments_due_at", "segments_due_at"),
        Index("uq_members_referral_code", "program_id", "referral_code", unique=True),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    external_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    #: The code a new member signs up with (domain/referrals); every new row gets one, erasure voids it.
    referral_code: Mapped[str | None] = mapped_column(String(16), default=new_referral_code)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    channels: Mapped[list[str]] = mapped_column(Json, default=list)
    joined_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Cached sum of POSTED ledger entries; moved only together with a ledger insert.
    points_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Cached sum of PENDING_REVIEW ledger entries.
    pending_points: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Population-relative scores (DESIGN.md), refreshed by `recomputeSegments`; null without purchases.
    rfm_r: Mapped[int | None] = mapped_column(Integer)
    rfm_f: Mapped[int | None] = mapped_column(Integer)
    rfm_m: Mapped[int | None] = mapped_column(Integer)
    rfm_label: Mapped[str | None] = mapped_column(String(32))
    abc_class: Mapped[str | None] = mapped_column(String(1))
    #: The next instant the passing of time alone may flip one of the member's segments (scheduler).
    segments_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Probability of no purchase in the next 7 days, from the program's churn model (domain/predict).
    churn_risk_7d: Mapped[float | None] = mapped_column(Float)
    churn_scored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Set by eraseMember: the row keeps only a pseudonym, amounts and times; its tokens are void.
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("program_id", "external_id"),
        Index("ix_events_member_type_time", "member_id", "type", "occurred_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    external_id: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    amount: Mapped[Decimal | None] = mapped_column(Amount)
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    points_awarded: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LedgerEntry(Base):
    """Append-only. The one permitted update: a PENDING_REVIEW accrual becomes POSTED or REJECTED."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("program_id", "idempotency_key"),
        Index("ix_ledger_member", "member_id", "id"),
        Index("ix_ledger_program_status", "program_id", "status"),
        Index("ix_ledger_event", "event_id"),
        #: Reversals only (refunds among them): what `not_refunded()` probes, small however big the ledger.
        Index(
            "ix_ledger_reversals",
            "program_id",
            "idempotency_key",
            postgresql_where=text("kind = 'REVERSAL'"),
            sqlite_where=text("kind = 'REVERSAL'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    reverses_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    #: Why a reviewer rejected a held accrual.
    decision_reason: Mapped[str | None] = mapped_column(String(500))
    #: Who posted a manual entry: an admin's e-mail or "key:<api key name>"; None when automatic.
    actor: Mapped[str | None] = mapped_column(Text)
    #: An event accrual's promotions (docs/promotions.md): [{"key", "points"}] in the order
    #: applied; None when none applied.
    promotions: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)


class PointsLot(Base):
    """Points credited while the program had an expiry: what is left of them expires at `expires_at`.

    Written only by domain/ledger/posting.py. Debits take `remaining` soonest expiry first;
    the sweep (domain/ledger/expiry.py) posts an EXPIRY entry for what is left when it is due.
    """

    __tablename__ = "points_lots"
    __table_args__ = (
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
        UniqueConstraint("program_id", "entry_id", name="uq_points_lots_program_entry"),
        #: The sweep's claim: due lots, soonest first; spent lots leave the index.
        Index(
            "ix_points_lots_due",
            "expires_at",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
        #: A member's open lots in the order debits take them.
        Index(
            "ix_points_lots_member_open",
            "member_id",
            "expires_at",
            "id",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    #: The crediting entry (an accrual, a bonus, a positive adjustment).
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FraudFinding(Base):
    """One non-ALLOW finding of the audit of an event, written in the event's batch transaction."""

    __tablename__ = "fraud_findings"
    __table_args__ = (
        Index("ix_fraud_findings_event", "event_id"),
        Index("ix_fraud_findings_program_member_at", "program_id", "member_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    rule: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(500))
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class FraudReceipt(Base):
    """The first event of the program that carried each `properties.receiptId` (the duplicate-receipt rule).

    The primary key makes claiming a receipt atomic: of two concurrent batches
    with the same receipt, one inserts the row and the other sees the conflict.
    """

    __tablename__ = "fraud_receipts"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    receipt_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_external_id: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FraudDevice(Base):
    """One use of a `properties.deviceId` by a member (the shared-device and self-referral rules)."""

    __tablename__ = "fraud_devices"
    __table_args__ = (
        Index("ix_fraud_devices_program_device_at", "program_id", "device_id", "occurred_at"),
        Index("ix_fraud_devices_member", "member_id", "device_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    device_id: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FraudRuleSetting(Base):
    """A program's configuration of one fraud rule; rules without a row run with their defaults."""

    __tablename__ = "fraud_rule_settings"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    shadow: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))


class EventAggregate(Base):
    """Per member, event type and UTC day: the buckets windowed conditions sum over."""

    __tablename__ = "event_aggregates"
    __table_args__ = (Index("ix_event_aggregates_program_type_day", "program_id", "event_type", "day"),)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    amount_count: Mapped[int] = mapped_column(Integer, default=0)  # events with an amount
    amount_sum: Mapped[int] = mapped_column(BigInteger)  # scaled units, see domain.db.types
    amount_min: Mapped[int | None] = mapped_column(BigInteger)
    amount_max: Mapped[int | None] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("program_id", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    #: The canonical condition tree; null for STATIC segments.
    condition: Mapped[dict[str, Any] | None] = mapped_column(Json)
    applies_tag: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentMembership(Base):
    """Who is in a segment now."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_member", "member_id"),)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentChange(Base):
    """Append-only log of every ENTERED / LEFT: size history and analytics read it."""

    __tablename__ = "segment_changes"
    __table_args__ = (
        Index("ix_segment_changes_segment_at", "segment_id", "at"),
        Index("ix_segment_changes_member", "member_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    change: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: ENTERED rows: when the member's first goal event after `at` may be (domain/analytics/recording.py).
    first_goal_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: first_goal_at is current; rows are logged unknown and recorded with the member's next batch.
    goal_known: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TierLadder(Base):
    """A program's tier ladder (DESIGN.md, Tiers): one per program; each tier is a TIER segment."""

    __tablename__ = "tier_ladders"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    #: An aggregate operand of the rule language, as given (`sum(purchase.amount, 365d)`).
    qualifier: Mapped[str] = mapped_column(String(1000))
    downgrade: Mapped[str] = mapped_column(String(16))
    grace_days: Mapped[int] = mapped_column(Integer)
    #: Ascending: [{"key", "name", "threshold", "earnMultiplier"}], decimals as strings.
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MemberTier(Base):
    """The tier a member holds (its TIER segment membership says the same) and its grace state."""

    __tablename__ = "member_tiers"
    __table_args__ = (Index("ix_member_tiers_program_tier", "program_id", "tier_key"),)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    tier_key: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime] = mapped_column(UtcDateTime)
    #: End of the grace period while the value is below the tier's threshold; else null.
    kept_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The highest tier reached since the ladder was set (what NEVER keeps).
    highest_key: Mapped[str] = mapped_column(String(32))


class MemberTag(Base):
    """A tag a member carries, once per source: "manual" or the key of the segment that applies it."""

    __tablename__ = "member_tags"
    __table_args__ = (Index("ix_member_tags_program_key", "program_id", "key", "member_id"),)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime)


class EarningRule(Base):
    __tablename__ = "earning_rules"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    points_per_unit: Mapped[Decimal | None] = mapped_column(Amount)
    fixed_points: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AdminUser(Base):
    __tablename__ = "admin_users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_secret: Mapped[str] = mapped_column(String(64))
    #: The last TOTP time step accepted: a code is never accepted twice.
    last_totp_timecode: Mapped[int | None] = mapped_column(BigInteger)
    #: An AdminRole; admins created before roles existed are OWNERs (migration 0016).
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """Who changed what: one row per configuration or points-changing mutation, written in the
    transaction of the change (domain/governance/audit_log.py)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_program", "program_id", "id"),
        Index("ix_audit_log_actor", "program_id", "actor", "id"),
        Index("ix_audit_log_action", "program_id", "action", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: An admin's e-mail, "key:<api key name>", or "system" (triggers, sweepers).
    actor: Mapped[str] = mapped_column(String(260))
    #: The mutation's name, e.g. "updateSegment".
    action: Mapped[str] = mapped_column(String(64))
    #: The key or externalId acted on.
    target: Mapped[str | None] = mapped_column(String(200))
    before: Mapped[Any] = mapped_column(Json, nullable=True)
    after: Mapped[Any] = mapped_column(Json, nullable=True)


class AdminSession(Base):
    __tablename__ = "admin_sessions"
    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    totp_verified_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RelayPosition(Base):
    """How far a relay has published an append-only log (e.g. segment_changes to Redis)."""

    __tablename__ = "relay_positions"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentTrigger(Base):
    """An action run when a member enters (or leaves) a segment; see docs/triggers.md."""

    __tablename__ = "segment_triggers"
    __table_args__ = (
        Index("ix_segment_triggers_program_segment", "program_id", "segment_id"),
        # ids are never reused (SQLite too): the runner's cache stamp is (count, max id)
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    #: ENTERED or LEFT
    fires_on: Mapped[str] = mapped_column(String(8))
    #: AWARD_POINTS, ADD_TAG, REMOVE_TAG, SEND_MESSAGE or CALL_WEBHOOK
    action: Mapped[str] = mapped_column(String(16))
    #: The action's validated parameters (domain/campaigns/definitions.py).
    params: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: Order within the segment's set, as given.
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("program_id", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    #: Signs every delivery (HMAC-SHA256); shown once, at creation.
    secret: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Message(Base):
    """A message a trigger or an experiment sent (or is sending, or withheld: SUPPRESSED) to a member."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_member", "member_id", "id"),
        Index("ix_messages_program", "program_id", "id"),
        Index("ix_messages_segment_created", "segment_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    segment_key: Mapped[str] = mapped_column(String(64))
    #: A channel the member accepted; null when SUPPRESSED (it accepted none).
    channel: Mapped[str | None] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    #: QUEUED, SENT, FAILED or SUPPRESSED (`campaigns.messages.MessageStatus`)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The member's reactions and goal events, recorded as they arrive (domain/analytics/recording.py).
    first_goal_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    opened: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    clicked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: first_goal_at, opened and clicked are current; rows are written unknown (see recording.py).
    stats_known: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class OutboxItem(Base):
    """A side effect written with the change that caused it, delivered after commit (at least once)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_due", "status", "next_attempt_at"),
        Index("ix_outbox_program_status", "program_id", "status", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    #: WEBHOOK or MESSAGE
    kind: Mapped[str] = mapped_column(String(16))
    #: Sent with every attempt: receivers deduplicate on it. Derived from trigger and change.
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: PENDING, DELIVERED or DEAD
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Set while a worker delivers it; a crashed worker's claim expires.
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class StandingsFeed(Base):
    """Members whose leaderboard standings may have moved, written with the change that moved them.

    The leaderboard feeder (gamification/leaderboards/feeder.py) recomputes each
    marked member's scores from the ledger, writes them to Redis and deletes the
    row: an outbox whose processing is idempotent, so a crash anywhere only repeats work.
    """

    __tablename__ = "standings_feed"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(BigInteger)
    member_id: Mapped[int] = mapped_column(BigInteger)
    #: When the change counts (the event's occurredAt): picks the periods to recompute.
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class Leaderboard(Base):
    """A board definition; the built-in `points` board needs no row (gamification/leaderboards)."""

    __tablename__ = "leaderboards"
    __table_args__ = (UniqueConstraint("program_id", "key"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    #: POINTS, EVENT_COUNT or EVENT_AMOUNT
    metric: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str | None] = mapped_column(String(64))
    #: PROGRAM, ORGANIZATION or SEGMENT
    scope: Mapped[str] = mapped_column(String(16))
    segment_key: Mapped[str | None] = mapped_column(String(64))
    #: The LeaderboardPeriod values kept, e.g. ["ALL_TIME", "MONTHLY"]
    periods: Mapped[list[str]] = mapped_column(Json)
    #: Closed periods kept readable in Redis, per period kind.
    keep_periods: Mapped[int] = mapped_column(Integer)
    #: Entries frozen in the database when a period closes.
    snapshot_size: Mapped[int] = mapped_column(Integer)
    #: Members (member tokens) may read it.
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LeaderboardSnapshot(Base):
    """A board's ranking frozen at an instant: at a period's close (payouts) or a priority window's start."""

    __tablename__ = "leaderboard_snapshots"
    __table_args__ = (UniqueConstraint("program_id", "label"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    #: board|scope|period|periodStart|asOf: one snapshot per instant
    label: Mapped[str] = mapped_column(String(300))
    board_key: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(80))
    period: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    as_of: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Members on the board at `as_of` (entries keep only the first `snapshot_size`).
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LeaderboardSnapshotEntry(Base):
    __tablename__ = "leaderboard_snapshot_entries"
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("leaderboard_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    score: Mapped[int] = mapped_column(BigInteger)
    reached_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Challenge(Base):
    """ "Do X N times within a period": completing it awards points once per member and period."""

    __tablename__ = "challenges"
    __table_args__ = (UniqueConstraint("program_id", "key"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64))
    target: Mapped[int] = mapped_column(Integer)
    #: DAILY, WEEKLY, MONTHLY, QUARTERLY, YEARLY or ALL_TIME
    period: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChallengeCompletion(Base):
    """A member completed a challenge in a period (a badge); at most one per member and period."""

    __tablename__ = "challenge_completions"
    __table_args__ = (Index("ix_challenge_completions_member", "member_id"),)
    challenge_id: Mapped[int] = mapped_column(
        ForeignKey("challenges.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
    completed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Reward(Base):
    """A catalogue item bought with points; `stock` never goes below zero."""

    __tablename__ = "rewards"
    __table_args__ = (
        UniqueConstraint("program_id", "key"),
        CheckConstraint("stock >= 0", name="stock_not_negative"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    cost_points: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: A coupon reward: each redemption also issues one code of this pool (docs/promotions.md)
    coupon_pool_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_pools.id"))


class RewardSegment(Base):
    """A segment whose members may redeem the reward; a reward listing none is for everyone.

    Keyed by the segment's key, not its id: a tier ladder replaced or a segment recreated
    keeps its rewards (a key that names no segment admits nobody)."""

    __tablename__ = "reward_segments"
    __table_args__ = (Index("ix_reward_segments_key", "segment_key"),)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id", ondelete="CASCADE"), primary_key=True)
    segment_key: Mapped[str] = mapped_column(String(64), primary_key=True)


class RewardWindow(Base):
    """During [starts_at, ends_at) only the top `top_n` of a board (as of starts_at) may redeem the reward."""

    __tablename__ = "reward_windows"
    #: A window is named by its reward and start: setting one with the same start replaces it.
    __table_args__ = (Index("ix_reward_windows_reward", "reward_id", "starts_at", unique=True),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id", ondelete="CASCADE"))
    board_key: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(16))
    top_n: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The frozen ranking at starts_at (set on the window's first use; pruned snapshots refreeze).
    snapshot_id: Mapped[int | None] = mapped_column(
        ForeignKey("leaderboard_snapshots.id", ondelete="SET NULL")
    )


class RewardRedemption(Base):
    """A reward a member bought: one REDEMPTION ledger entry, one unit of stock.

    Idempotency lives on the ledger entry (its key is derived from the member and
    `idempotency_key`, the caller's key, kept here as given).
    """

    __tablename__ = "reward_redemptions"
    __table_args__ = (
        UniqueConstraint("program_id", "ledger_entry_id", name="uq_reward_redemptions_program_entry"),
        Index("ix_reward_redemptions_member", "member_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    ledger_entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChurnModel(Base):
    """One trained churn model of a program: its holdout figures and coefficients, as JSON (no pickles)."""

    __tablename__ = "churn_models"
    __table_args__ = (Index("ix_churn_models_program", "program_id", "trained_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    trained_at: Mapped[datetime] = mapped_column(UtcDateTime)
    algorithm: Mapped[str] = mapped_column(String(64))
    auc: Mapped[float | None] = mapped_column(Float)
    brier: Mapped[float | None] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    positives: Mapped[int] = mapped_column(Integer)
    negatives: Mapped[int] = mapped_column(Integer)
    scored: Mapped[int] = mapped_column(Integer)
    #: features, scaler means/scales, coefficients, intercept, calibration table, cutoffs
    report: Mapped[dict[str, Any]] = mapped_column(Json)


class Experiment(Base):
    """An A/B test on a segment's members: weighted variants, an optional holdout, a goal event type."""

    __tablename__ = "experiments"
    #: ids are never reused: ledger and delivery ids of exposures are derived from them
    __table_args__ = (UniqueConstraint("program_id", "key"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    segment_key: Mapped[str] = mapped_column(String(64))
    goal_event_type: Mapped[str] = mapped_column(String(64))
    conversion_days: Mapped[int] = mapped_column(Integer)
    holdout_percent: Mapped[int] = mapped_column(Integer)
    #: A variant's key, or "holdout"
    control: Mapped[str] = mapped_column(String(64))
    #: [{key, weight, action: {type, points?, template?, channel?, rewardKey?}}] in the admin's order
    variants: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ExperimentExposure(Base):
    """A member's sticky assignment in an experiment, recorded at first exposure and never changed."""

    __tablename__ = "experiment_exposures"
    __table_args__ = (Index("ix_experiment_exposures_variant", "experiment_id", "variant"),)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    #: A variant's key, or "holdout"
    variant: Mapped[str] = mapped_column(String(64))
    exposed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The reward a REWARD_OFFER variant offered the member
    offered_reward_key: Mapped[str | None] = mapped_column(String(64))


class ReferralProgram(Base):
    """A program's referral settings (`setReferralProgram`); no row: referrals are off."""

    __tablename__ = "referral_programs"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    #: Points the new member gets on joining with a code.
    join_points: Mapped[int] = mapped_column(BigInteger)
    #: Points the referrer gets once the referred member's first purchase has stuck.
    referrer_points: Mapped[int] = mapped_column(BigInteger)
    #: The wait (refund window) after the qualifying purchase before the referrer is paid.
    wait_days: Mapped[int] = mapped_column(Integer)
    #: The event type whose first ACCEPTED event qualifies the referral ("purchase"; "sale" in B2B).
    event_type: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Referral(Base):
    """One member signed up with another's code (domain/referrals): its progress and its payout.

    status: PENDING (no qualifying purchase yet), WAITING (purchase accepted, payout at `due_at`),
    COMPLETED (referrer paid), CANCELLED (the purchase was refunded or a member erased), HELD (a
    fraud rule asked for review), BLOCKED (a fraud rule or a reviewer refused it)."""

    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("program_id", "referred_id", name="uq_referrals_referred_id"),
        Index("ix_referrals_referrer", "referrer_id", "created_at"),
        Index("ix_referrals_due", "status", "due_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    referrer_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    referred_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    #: The code as it was used (the referrer's code at signup).
    code: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    #: The referral fraud rules' verdict at signup (ALLOW, REVIEW, BLOCK) and their findings.
    verdict: Mapped[str] = mapped_column(String(8))
    findings: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    join_points: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The referred member's first accepted event of the program's referral event type.
    #: (no foreign key: `events` is partitioned by month on PostgreSQL, docs/scaling.md)
    qualifying_event_id: Mapped[int | None] = mapped_column(BigId)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    referrer_points: Mapped[int] = mapped_column(BigInteger, default=0)
    #: When it ended: COMPLETED, CANCELLED or BLOCKED (or a reviewer approved it).
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Why it was cancelled, blocked or approved.
    note: Mapped[str | None] = mapped_column(Text)


class CouponPool(Base):
    """A program's coupon codes of one offer: what they give and how long an issued code is valid."""

    __tablename__ = "coupon_pools"
    __table_args__ = (UniqueConstraint("program_id", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    #: What the member and the till read, e.g. "10 % off your first purchase"
    description: Mapped[str] = mapped_column(Text, default="")
    #: PERCENT, AMOUNT (off the basket, in the program's currency) or OTHER (the description says)
    discount_kind: Mapped[str] = mapped_column(String(16))
    discount_value: Mapped[Decimal | None] = mapped_column(Amount)
    #: Issued codes expire then (fixed date) ...
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: ... or this many days after they were issued; neither: never (an imported code's own expiry wins)
    valid_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Promotion(Base):
    """A conditional earning rule on top of the base one (docs/promotions.md, "Promotions")."""

    __tablename__ = "promotions"
    __table_args__ = (
        UniqueConstraint("program_id", "key"),
        CheckConstraint("budget_points IS NULL OR spent_points <= budget_points", name="within_budget"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64))
    #: The condition as its normalised rule text, and as its tree (conditions.condition_to_json).
    rule: Mapped[str] = mapped_column(Text)
    condition: Mapped[dict[str, Any]] = mapped_column(Json)
    #: None: 1 (no multiplier). Exact to 4 decimals.
    multiplier: Mapped[Decimal | None] = mapped_column(Amount)
    bonus_points: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Local wall times in the program's timezone, "YYYY-MM-DDTHH:MM:SS"; None: open-ended.
    starts_local: Mapped[str | None] = mapped_column(String(19))
    ends_local: Mapped[str | None] = mapped_column(String(19))
    #: At most this many points per member per cap_period (DAY, WEEK, MONTH, YEAR, TOTAL).
    cap_points: Mapped[int | None] = mapped_column(BigInteger)
    cap_period: Mapped[str | None] = mapped_column(String(8))
    budget_points: Mapped[int | None] = mapped_column(BigInteger)
    spent_points: Mapped[int] = mapped_column(BigInteger, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    #: STACK or EXCLUSIVE
    stacking: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CouponCode(Base):
    """One code: AVAILABLE in its pool, ISSUED to a member (once, for good), REDEEMED at most once.

    `issue_key` names what issued it (a trigger firing, an exposure, a reward redemption), so a
    replay of the same cause finds the code it issued instead of taking another."""

    __tablename__ = "coupon_codes"
    __table_args__ = (
        UniqueConstraint("program_id", "code", name="uq_coupon_codes_code"),
        UniqueConstraint("program_id", "issue_key", name="uq_coupon_codes_issue_key"),
        UniqueConstraint("program_id", "redemption_key", name="uq_coupon_codes_redemption_key"),
        Index("ix_coupon_codes_pool_status", "pool_id", "status", "id"),
        Index("ix_coupon_codes_member", "member_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    pool_id: Mapped[int] = mapped_column(ForeignKey("coupon_pools.id"))
    #: Upper case, unique in the program
    code: Mapped[str] = mapped_column(String(64))
    #: AVAILABLE, ISSUED, REDEEMED, VOID (its member was erased before using it)
    status: Mapped[str] = mapped_column(String(16))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    issue_key: Mapped[str | None] = mapped_column(String(200))
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Set at import (the file's column) or at issue (the pool's validity)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    redeemed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The POS request's externalId: a replay of it answers the same redemption
    redemption_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PromotionUsage(Base):
    """Points a promotion paid one member in one cap period (its local start date, or "TOTAL")."""

    __tablename__ = "promotion_usage"
    promotion_id: Mapped[int] = mapped_column(
        ForeignKey("promotions.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    #: In the key for a distribution by program (docs/scaling.md, Citus)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
