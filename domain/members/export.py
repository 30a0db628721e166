"""The right of access (GDPR art. 15 and 20, KVKK art. 11): `exportMember`, one JSON document of
everything the program holds about a member. The shape is documented in docs/privacy.md and
versioned by `FORMAT`; a new section is added under a new key, never by changing one.

The document is read in one snapshot (`Database.snapshot_read`: the read replica when there is
one, so it may lag the primary by the replication delay): one query per section, and
the long sections (events, ledger) in keyset pages of `PAGE` rows, never one query per row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Executable, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from domain.clock import Clock
from domain.coupons.status import status_at
from domain.db.engine import Database
from domain.errors import InvalidInput, NotFound
from domain.events.validation import Rejection, validate_external_id
from domain.members.service import members_by_external_id
from domain.models import (
    Challenge,
    ChallengeCompletion,
    CouponCode,
    CouponPool,
    Event,
    EventAggregate,
    Experiment,
    ExperimentExposure,
    FraudFinding,
    LedgerEntry,
    Member,
    MemberTag,
    MemberTier,
    Message,
    Organization,
    OutboxItem,
    PointsLot,
    Program,
    Referral,
    Reward,
    RewardRedemption,
    Segment,
    SegmentChange,
    SegmentMembership,
)
from domain.segments.lifecycle import LifecycleThresholds, lifecycle_stage

#: Names the document's shape; bumped only if a section's meaning changes.
FORMAT = "loyalty.member-export/1"
#: Rows per query of a long section.
PAGE = 1000

Document = dict[str, Any]


def _at(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


class MemberExporter:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def export(self, program_id: int, external_id: str) -> Document:
        """The member's document; NOT_FOUND naming `external_id` when no (unerased) member has it."""
        try:
            validate_external_id(external_id, "externalId")
        except Rejection as rejection:
            raise InvalidInput(str(rejection)) from None
        now = self.clock.now()
        async with self.db.snapshot_read() as session:
            member = (await members_by_external_id(session, program_id, [external_id])).get(external_id)
            if member is None:
                raise NotFound(f"externalId: no member {external_id!r} in this program")
            program = await session.get(Program, program_id)
            assert program is not None
            return {
                "format": FORMAT,
                "exportedAt": now.isoformat(),
                "program": program.key,
                "member": await _profile(session, member),
                "scores": await _scores(session, program, member, now),
                "tier": await _tier(session, program_id, member.id),
                "tags": await _tags(session, member.id),
                "segments": await _segments(session, member.id),
                "segmentHistory": await _segment_history(session, member.id),
                "events": [e async for e in _events(session, member.id)],
                "ledger": [e async for e in _ledger(session, member.id)],
                "pointsLots": await _lots(session, member.id),
                "messages": await _messages(session, member.id),
                "challenges": await _challenges(session, member.id),
                "redemptions": await _redemptions(session, member.id),
                "coupons": await _coupons(session, member.id, now),
                "experiments": await _experiments(session, member.id),
                "fraudFindings": await _findings(session, member.id),
                "referrals": await _referrals(session, member),
            }


async def _profile(session: AsyncSession, member: Member) -> Document:
    organization = None
    if member.organization_id is not None:
        org = await session.get(Organization, member.organization_id)
        assert org is not None
        organization = {"externalId": org.external_id, "name": org.name}
    return {
        "externalId": member.external_id,
        "kind": member.kind,
        "organization": organization,
        "attributes": member.attributes,
        "channels": list(member.channels),
        "joinedAt": _at(member.joined_at),
        "createdAt": _at(member.created_at),
        "updatedAt": _at(member.updated_at),
        "pointsBalance": member.points_balance,
        "pendingPoints": member.pending_points,
    }


async def _scores(session: AsyncSession, program: Program, member: Member, now: datetime) -> Document:
    purchases = (
        await session.execute(
            select(func.coalesce(func.sum(EventAggregate.count), 0), func.max(EventAggregate.last_at)).where(
                EventAggregate.member_id == member.id, EventAggregate.event_type == "purchase"
            )
        )
    ).one()
    thresholds = LifecycleThresholds.from_settings(program.settings or {})
    rfm = None
    if member.rfm_r is not None:
        rfm = {"r": member.rfm_r, "f": member.rfm_f, "m": member.rfm_m, "label": member.rfm_label}
    return {
        "rfm": rfm,
        "abcClass": member.abc_class,
        "lifecycle": lifecycle_stage(
            member.joined_at, int(purchases[0]), purchases[1], now, thresholds
        ).value,
        "churnRisk7d": member.churn_risk_7d,
        "churnScoredAt": _at(member.churn_scored_at),
    }


async def _tier(session: AsyncSession, program_id: int, member_id: int) -> Document | None:
    tier = await session.get(MemberTier, (member_id, program_id))
    if tier is None:
        return None
    return {
        "key": tier.tier_key,
        "since": _at(tier.since),
        "keptUntil": _at(tier.kept_until),
        "highestKey": tier.highest_key,
    }


async def _rows(session: AsyncSession, query: Executable, shape: Callable[..., Document]) -> list[Document]:
    return [shape(*row) for row in await session.execute(query)]


async def _tags(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(MemberTag.key, MemberTag.source, MemberTag.since)
        .where(MemberTag.member_id == member_id)
        .order_by(MemberTag.key, MemberTag.source)
    )
    return await _rows(session, query, lambda k, s, at: {"key": k, "source": s, "since": _at(at)})


async def _segments(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(Segment.key, Segment.kind, SegmentMembership.since)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(SegmentMembership.member_id == member_id)
        .order_by(Segment.key)
    )
    return await _rows(session, query, lambda k, kind, at: {"key": k, "kind": kind, "since": _at(at)})


async def _segment_history(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(Segment.key, SegmentChange.change, SegmentChange.at)
        .join(Segment, Segment.id == SegmentChange.segment_id)
        .where(SegmentChange.member_id == member_id)
        .order_by(SegmentChange.id)
    )
    return await _rows(session, query, lambda k, c, at: {"segment": k, "change": c, "at": _at(at)})


async def _paged(
    session: AsyncSession, query: Select[Any], key: InstrumentedAttribute[int] | ColumnElement[int]
) -> AsyncIterator[Any]:
    """The rows of `query` in `key` order, `PAGE` at a time (keyset pagination); `key` is the
    query's last column."""
    after: int | None = None
    while True:
        page = query if after is None else query.where(key > after)
        rows = (await session.execute(page.order_by(key).limit(PAGE))).all()
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = rows[-1][-1]


async def _events(session: AsyncSession, member_id: int) -> AsyncIterator[Document]:
    query = select(Event).where(Event.member_id == member_id)
    async for event, _ in _paged(session, query.add_columns(Event.id), Event.id):
        yield {
            "externalId": event.external_id,
            "type": event.type,
            "occurredAt": _at(event.occurred_at),
            "receivedAt": _at(event.received_at),
            "amount": _amount(event.amount),
            "properties": event.properties,
            "status": event.status,
            "pointsAwarded": event.points_awarded,
            "message": event.message,
        }


async def _ledger(session: AsyncSession, member_id: int) -> AsyncIterator[Document]:
    query = (
        select(LedgerEntry, Event.external_id)
        .outerjoin(Event, Event.id == LedgerEntry.event_id)
        .where(LedgerEntry.member_id == member_id)
        .add_columns(LedgerEntry.id)
    )
    async for entry, event_external_id, _ in _paged(session, query, LedgerEntry.id):
        yield {
            "id": entry.id,
            "points": entry.points,
            "status": entry.status,
            "kind": entry.kind,
            "reason": entry.reason,
            "eventExternalId": event_external_id,
            "reversesEntryId": entry.reverses_entry_id,
            "createdAt": _at(entry.created_at),
            "decidedAt": _at(entry.decided_at),
            "decisionReason": entry.decision_reason,
        }


async def _lots(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(
            PointsLot.entry_id,
            PointsLot.points,
            PointsLot.remaining,
            PointsLot.earned_at,
            PointsLot.expires_at,
        )
        .where(PointsLot.member_id == member_id)
        .order_by(PointsLot.id)
    )
    return await _rows(
        session,
        query,
        lambda entry, points, remaining, earned, expires: {
            "entryId": entry,
            "points": points,
            "remaining": remaining,
            "earnedAt": _at(earned),
            "expiresAt": _at(expires),
        },
    )


async def _messages(session: AsyncSession, member_id: int) -> list[Document]:
    messages: dict[int, Document] = {}
    for message in await session.scalars(
        select(Message).where(Message.member_id == member_id).order_by(Message.id)
    ):
        messages[message.id] = {
            "segment": message.segment_key,
            "channel": message.channel,
            "template": message.template,
            "status": message.status,
            "error": message.error,
            "createdAt": _at(message.created_at),
            "sentAt": _at(message.sent_at),
            "opened": message.opened,
            "clicked": message.clicked,
            "deliveries": [],
        }
    deliveries = (
        select(OutboxItem.message_id, OutboxItem.delivery_id, OutboxItem.status, OutboxItem.attempts)
        .add_columns(OutboxItem.created_at, OutboxItem.delivered_at)
        .join(Message, Message.id == OutboxItem.message_id)
        .where(Message.member_id == member_id)
        .order_by(OutboxItem.id)
    )
    for message_id, delivery, status, attempts, created, delivered in await session.execute(deliveries):
        messages[message_id]["deliveries"].append(
            {
                "deliveryId": delivery,
                "status": status,
                "attempts": attempts,
                "createdAt": _at(created),
                "deliveredAt": _at(delivered),
            }
        )
    return list(messages.values())


async def _challenges(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(Challenge.key, ChallengeCompletion.period_start, ChallengeCompletion.points)
        .add_columns(ChallengeCompletion.completed_at)
        .join(Challenge, Challenge.id == ChallengeCompletion.challenge_id)
        .where(ChallengeCompletion.member_id == member_id)
        .order_by(ChallengeCompletion.completed_at, Challenge.key)
    )
    return await _rows(
        session,
        query,
        lambda key, start, points, at: {
            "challenge": key,
            "periodStart": _at(start),
            "points": points,
            "completedAt": _at(at),
        },
    )


async def _redemptions(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(Reward.key, RewardRedemption.points, RewardRedemption.ledger_entry_id)
        .add_columns(RewardRedemption.idempotency_key, RewardRedemption.created_at)
        .join(Reward, Reward.id == RewardRedemption.reward_id)
        .where(RewardRedemption.member_id == member_id)
        .order_by(RewardRedemption.id)
    )
    return await _rows(
        session,
        query,
        lambda key, points, entry, idempotency_key, at: {
            "reward": key,
            "points": points,
            "ledgerEntryId": entry,
            "idempotencyKey": idempotency_key,
            "createdAt": _at(at),
        },
    )


async def _coupons(session: AsyncSession, member_id: int, now: datetime) -> list[Document]:
    query = (
        select(CouponCode, CouponPool)
        .join(CouponPool, CouponPool.id == CouponCode.pool_id)
        .where(CouponCode.member_id == member_id)
        .order_by(CouponCode.id)
    )
    return [
        {
            "code": code.code,
            "pool": pool.key,
            "status": status_at(code, now).value,
            "issuedAt": _at(code.issued_at),
            "expiresAt": _at(code.expires_at),
            "redeemedAt": _at(code.redeemed_at),
            "redemptionExternalId": code.redemption_key,
        }
        for code, pool in (await session.execute(query)).all()
    ]


async def _experiments(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(Experiment.key, ExperimentExposure.variant, ExperimentExposure.exposed_at)
        .add_columns(ExperimentExposure.offered_reward_key)
        .join(Experiment, Experiment.id == ExperimentExposure.experiment_id)
        .where(ExperimentExposure.member_id == member_id)
        .order_by(ExperimentExposure.exposed_at, Experiment.key)
    )
    return await _rows(
        session,
        query,
        lambda key, variant, at, reward: {
            "experiment": key,
            "variant": variant,
            "exposedAt": _at(at),
            "offeredRewardKey": reward,
        },
    )


async def _findings(session: AsyncSession, member_id: int) -> list[Document]:
    query = (
        select(FraudFinding.rule, FraudFinding.verdict, FraudFinding.detail, FraudFinding.shadow)
        .add_columns(FraudFinding.at, Event.external_id)
        .join(Event, Event.id == FraudFinding.event_id)
        .where(FraudFinding.member_id == member_id)
        .order_by(FraudFinding.id)
    )
    return await _rows(
        session,
        query,
        lambda rule, verdict, detail, shadow, at, event: {
            "rule": rule,
            "verdict": verdict,
            "detail": detail,
            "shadow": shadow,
            "at": _at(at),
            "eventExternalId": event,
        },
    )


async def _referrals(session: AsyncSession, member: Member) -> Document:
    """The member's referral code, the referral it joined with and those it made. The other side of
    each referral is another person: only its status, rewards and times are given, not who."""
    rows = (
        await session.execute(
            select(Referral)
            .where((Referral.referrer_id == member.id) | (Referral.referred_id == member.id))
            .order_by(Referral.id)
        )
    ).scalars()

    def shape(r: Referral, points: int) -> Document:
        return {
            "code": r.code,
            "status": r.status,
            "verdict": r.verdict,
            "createdAt": _at(r.created_at),
            "dueAt": _at(r.due_at),
            "settledAt": _at(r.settled_at),
            "points": points,
        }

    joined: Document | None = None
    made: list[Document] = []
    for r in rows:
        if r.referred_id == member.id:
            joined = shape(r, int(r.join_points))
        else:
            made.append(shape(r, int(r.referrer_points)))
    return {"referralCode": member.referral_code, "joinedWith": joined, "made": made}
