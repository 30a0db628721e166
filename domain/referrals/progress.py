"""A referred member's first accepted qualifying event starts the wait before the referrer is paid.

Called by the accrual pipeline after it posts a batch (and by the approval of a held event),
inside that transaction: one indexed look-up of the referrals of the batch's members that have
no qualifying event yet (`uq_referrals_referred_id`), nothing when none has. A PENDING referral
becomes WAITING, due `waitDays` after the event occurred (the refund window runs from the
purchase); a HELD one keeps its status and its due time, which counts once a reviewer approves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.models import Referral
from domain.referrals.program import active_settings
from domain.referrals.status import ReferralStatus

_OPEN = (ReferralStatus.PENDING.value, ReferralStatus.HELD.value)


@dataclass(frozen=True)
class AcceptedEvent:
    member_id: int
    event_id: int
    type: str
    occurred_at: datetime


async def note_qualifying_events(
    session: AsyncSession, program_id: int, accepted: Iterable[AcceptedEvent]
) -> int:
    """Mark the referrals the accepted events qualify; how many were marked."""
    settings = None
    first: dict[int, AcceptedEvent] = {}
    for event in accepted:
        if settings is None:
            settings = await active_settings(session, program_id)
            if settings is None:
                return 0
        if event.type != settings.event_type:
            continue
        held = first.get(event.member_id)
        if held is None or (event.occurred_at, event.event_id) < (held.occurred_at, held.event_id):
            first[event.member_id] = event
    if settings is None or not first:
        return 0
    referrals = (
        await session.execute(
            select(Referral).where(
                in_values(Referral.referred_id, sorted(first), dialect_of(session)),
                Referral.status.in_(_OPEN),
                Referral.qualifying_event_id.is_(None),
            )
        )
    ).scalars()
    marked = 0
    for referral in referrals:
        event = first[referral.referred_id]
        referral.qualifying_event_id = event.event_id
        referral.due_at = event.occurred_at + timedelta(days=settings.wait_days)
        if referral.status == ReferralStatus.PENDING:
            referral.status = ReferralStatus.WAITING.value
        marked += 1
    return marked
