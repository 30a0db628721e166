"""The right to erasure (GDPR art. 17, KVKK art. 7): `eraseMember` (docs/privacy.md).

In one unit of work the member's attributes, channels, tags, tier, event properties
and message texts are deleted, its externalId becomes a random pseudonym wherever
stored text names it, and `erased_at` is set, which voids its tokens and takes it out
of every lookup, segment evaluation and board. Its coupon codes are renamed
`~erased-<id>` and the unused ones voided (`domain.coupons.issuing`). Amounts, types and times stay, so
ledger sums, expiry lots, day buckets, other members' standings, segment history and
analytics stay exact. The member leaves its segments through the change log (LEFT
rows), and its board entries are removed after commit by the standings feeder.

Limits: text elsewhere that names the member by other means (another member's event
properties, a free-text reason typed by an admin about it) is not searched.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, cast, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from domain.campaigns.messages import MessageStatus
from domain.campaigns.outbox import OutboxStatus
from domain.clock import Clock
from domain.coupons.issuing import forget_member_codes
from domain.db.engine import Database, UnitOfWork
from domain.db.types import UtcDateTime
from domain.errors import InvalidInput, NotFound
from domain.events.validation import Rejection, validate_external_id
from domain.governance.audit_log import MEMBER_ACTIONS, pseudonymise_target, record_change
from domain.models import (
    AuditEntry,
    Event,
    FraudDevice,
    FraudFinding,
    FraudReceipt,
    LedgerEntry,
    Member,
    MemberTag,
    MemberTier,
    Message,
    OutboxItem,
    Referral,
    RewardRedemption,
)
from domain.referrals.status import OPEN, ReferralStatus
from domain.segments.engine import SegmentEngine
from domain.standings import mark_standings

#: Every pseudonym starts with it: "erased-" and 32 random hex digits.
PSEUDONYM_PREFIX = "erased-"
#: What a message or delivery still waiting for an erased member becomes.
ERASED_NOTE = "member erased"


@dataclass(frozen=True)
class Erasure:
    """What `erase` did: the pseudonym the member now carries and how many segments it left."""

    pseudonym: str
    segments_left: int


def new_pseudonym() -> str:
    return PSEUDONYM_PREFIX + secrets.token_hex(16)


class ErasureService:
    def __init__(self, db: Database, clock: Clock, segments: SegmentEngine) -> None:
        self.db = db
        self.clock = clock
        self.segments = segments

    async def erase(self, program_id: int, external_id: str, actor: str) -> Erasure:
        """Erase the member in one transaction; NOT_FOUND when no (unerased) member has `external_id`."""
        try:
            validate_external_id(external_id, "externalId")
        except Rejection as rejection:
            raise InvalidInput(str(rejection)) from None
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            member_id = await _locked_member(session, program_id, external_id)
            pseudonym = new_pseudonym()
            left = await self.segments.leave_all(session, program_id, member_id, now)
            await _forget_profile(session, member_id, pseudonym, now)
            await _forget_contents(session, member_id)
            await forget_member_codes(session, member_id)
            await _rename(session, program_id, member_id, external_id, pseudonym)
            await mark_standings(session, program_id, await _counting_instants(session, member_id))
            await record_change(
                uow, program_id=program_id, actor=actor, action="eraseMember", at=now, target=pseudonym
            )
        return Erasure(pseudonym, left)


async def _locked_member(session: AsyncSession, program_id: int, external_id: str) -> int:
    """The member's id, its row locked (PostgreSQL; SQLite has one writer). A concurrent erasure
    of the same member waits for the lock, then finds the name gone: NOT_FOUND, not a second erasure."""
    member_id = await session.scalar(
        select(Member.id)
        .where(
            Member.program_id == program_id,
            Member.external_id == external_id,
            Member.erased_at.is_(None),
        )
        .with_for_update()
    )
    if member_id is None:
        raise NotFound(f"externalId: no member {external_id!r} in this program")
    return member_id


async def _forget_profile(session: AsyncSession, member_id: int, pseudonym: str, now: datetime) -> None:
    """The member row keeps amounts, kind, organization and times; its tags and tier go."""
    await session.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(
            external_id=pseudonym,
            referral_code=None,  # the code is void: nobody signs up with it any more
            attributes={},
            channels=[],
            erased_at=now,
            updated_at=now,
            segments_due_at=None,  # nothing to re-evaluate: the engine skips it for good
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(delete(MemberTag).where(MemberTag.member_id == member_id))
    await session.execute(delete(MemberTier).where(MemberTier.member_id == member_id))
    # the referrals it made forget its code; those still open are cancelled (nobody to pay)
    await session.execute(
        update(Referral)
        .where(Referral.referrer_id == member_id)
        .values(code="")
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Referral)
        .where(Referral.referrer_id == member_id, Referral.status.in_(sorted(OPEN)))
        .values(status=ReferralStatus.CANCELLED.value, settled_at=now, note="the referrer was erased")
        .execution_options(synchronize_session=False)
    )


async def _forget_contents(session: AsyncSession, member_id: int) -> None:
    """Event properties and the texts of messages and deliveries; what still waits is never sent."""
    await session.execute(
        update(Event)
        .where(Event.member_id == member_id)
        .values(properties={}, message=None)
        .execution_options(synchronize_session=False)
    )
    messages = select(Message.id).where(Message.member_id == member_id).scalar_subquery()
    await session.execute(
        update(Message)
        .where(Message.member_id == member_id, Message.status == MessageStatus.QUEUED.value)
        .values(status=MessageStatus.FAILED.value, error=ERASED_NOTE)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Message)
        .where(Message.member_id == member_id, Message.error != ERASED_NOTE)
        .values(error=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.message_id.in_(messages), OutboxItem.status == OutboxStatus.PENDING.value)
        .values(status=OutboxStatus.DEAD.value, last_error=ERASED_NOTE, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.message_id.in_(messages), OutboxItem.status != OutboxStatus.DEAD.value)
        .values(last_error=None)
        .execution_options(synchronize_session=False)
    )


async def _rename(session: AsyncSession, program_id: int, member_id: int, old: str, new: str) -> None:
    """Replace `old` by `new` in every stored text that can name the member: its events' and
    entries' keys and reasons, fraud details, receipt and device claims, redemption keys, delivery
    payloads, and the audit log entries about the member (targets and before/after documents)."""
    text_columns: list[tuple[InstrumentedAttribute[Any], InstrumentedAttribute[int]]] = [
        (Event.external_id, Event.member_id),
        (LedgerEntry.reason, LedgerEntry.member_id),
        (LedgerEntry.idempotency_key, LedgerEntry.member_id),
        (LedgerEntry.decision_reason, LedgerEntry.member_id),
        (FraudFinding.detail, FraudFinding.member_id),
        (FraudReceipt.event_external_id, FraudReceipt.member_id),
        (FraudReceipt.receipt_id, FraudReceipt.member_id),
        (FraudDevice.device_id, FraudDevice.member_id),
        (RewardRedemption.idempotency_key, RewardRedemption.member_id),
    ]
    for column, owner in text_columns:
        await session.execute(
            update(column.class_)
            .where(owner == member_id, column.contains(old, autoescape=True))
            .values({column.key: func.replace(column, old, new)})
            .execution_options(synchronize_session=False)
        )
    await pseudonymise_target(UnitOfWork.of(session), program_id, old, new)
    member_entries = and_(AuditEntry.program_id == program_id, AuditEntry.action.in_(sorted(MEMBER_ACTIONS)))
    await _rename_in_documents(session, AuditEntry, ("before", "after"), member_entries, old, new)
    await _rename_in_documents(
        session, OutboxItem, ("payload",), OutboxItem.program_id == program_id, old, new
    )


async def _rename_in_documents(
    session: AsyncSession, model: Any, fields: tuple[str, ...], scope: Any, old: str, new: str
) -> None:
    """JSON columns: the rows whose text mentions `old` are read, and every string that is exactly
    `old` (a key or a value) is rewritten; a longer string merely containing it is another name."""
    columns = [getattr(model, name) for name in fields]
    mentions = or_(*(cast(c, Text).contains(old, autoescape=True) for c in columns))
    rows = (await session.execute(select(model.id, *columns).where(scope, mentions))).all()
    rewrite = _replacer(old, new)
    for row_id, *documents in rows:
        await session.execute(
            update(model)
            .where(model.id == row_id)
            .values({name: rewrite(doc) for name, doc in zip(fields, documents, strict=True)})
            .execution_options(synchronize_session=False)
        )


def _replacer(old: str, new: str) -> Callable[[Any], Any]:
    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            return new if value == old else value
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if isinstance(value, dict):
            return {rewrite(key): rewrite(item) for key, item in value.items()}
        return value

    return rewrite


async def _counting_instants(session: AsyncSession, member_id: int) -> list[tuple[int, datetime]]:
    """(member, instant) for every instant the member's standings count at (its entries' and
    accepted events'): the feeder recomputes each period they fall in and, finding the member
    erased, removes it from those boards."""
    entry_at = func.coalesce(Event.occurred_at, LedgerEntry.created_at, type_=UtcDateTime)
    entries = await session.execute(
        select(entry_at)
        .distinct()
        .select_from(LedgerEntry)
        .outerjoin(Event, Event.id == LedgerEntry.event_id)
        .where(LedgerEntry.member_id == member_id)
    )
    events = await session.execute(select(Event.occurred_at).distinct().where(Event.member_id == member_id))
    return sorted({(member_id, at) for (at,) in [*entries, *events]})
