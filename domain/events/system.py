"""Events the engine records itself (messages sent, failed, suppressed; referrals completed): the
pipeline's storage path.

A system event is stored like an accepted event of `recordEvents` (steps 5 and 6 of
the accrual pipeline: `insert_events`, then `post_accruals`, which folds it into the
day buckets, marks the standings feed and collects the `MembersChanged` the segment
engine evaluates), but it skips earning and the audit: it earns no points and no
fraud rule judges it. Its externalId is derived from what it records, so recording
it twice stores it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from domain.enums import AccrualStatus, EventStatus
from domain.events.validation import ValidEvent
from domain.events.writes import EventRow, insert_events
from domain.ledger.posting import Accrual, post_accruals

MESSAGE_SENT = "message_sent"
MESSAGE_FAILED = "message_failed"
MESSAGE_SUPPRESSED = "message_suppressed"
#: Recorded for the referrer when a referral pays out (domain/referrals/payout.py).
REFERRAL_COMPLETED = "referral_completed"
#: Recorded for a member when a coupon is used at the till (domain/coupons/), through the pipeline.
COUPON_REDEEMED = "coupon_redeemed"
#: The event types the engine records; they earn no points and pass no fraud rule.
SYSTEM_EVENT_TYPES = frozenset({MESSAGE_SENT, MESSAGE_FAILED, MESSAGE_SUPPRESSED, REFERRAL_COMPLETED})
#: What only the engine may record: rewards and segments count them (a referrer's completed
#: referrals, a member's used coupons), so `recordEvents` REJECTS a client's event of these types.
#: Message events stay open: a program whose own e-mail service sends messages reports them.
ENGINE_ONLY_TYPES = frozenset({REFERRAL_COMPLETED, COUPON_REDEEMED})


@dataclass(frozen=True)
class SystemEvent:
    member_id: int
    member_external_id: str
    external_id: str
    type: str
    occurred_at: datetime
    properties: dict[str, Any]

    def valid(self) -> ValidEvent:
        digest = hashlib.sha256()
        for part in (self.member_external_id, self.type, self.occurred_at.isoformat(), "None"):
            digest.update(part.encode())
            digest.update(b"\x00")
        digest.update(orjson.dumps(self.properties, option=orjson.OPT_SORT_KEYS))
        return ValidEvent(
            self.external_id,
            self.member_external_id,
            self.type,
            self.occurred_at,
            None,
            self.properties,
            digest.hexdigest(),
        )


async def record_system_events(
    session: AsyncSession, program_id: int, events: Sequence[SystemEvent], now: datetime
) -> int:
    """Store the events ACCEPTED with 0 points (those already stored are skipped); how many were new."""
    if not events:
        return 0
    rows = [
        EventRow(e.valid(), e.member_id, EventStatus.ACCEPTED, AccrualStatus.POSTED, 0, None) for e in events
    ]
    inserted = await insert_events(session, program_id, rows, now)
    accruals = [
        Accrual(r.member_id, r.event, inserted[r.event.external_id], 0, AccrualStatus.POSTED)
        for r in rows
        if r.event.external_id in inserted
    ]
    await post_accruals(session, program_id, accruals, now)
    return len(accruals)


def message_event(
    kind: str,
    message_id: int,
    member_id: int,
    member_external_id: str,
    template: str,
    channel: str | None,
    segment: str | None,
    at: datetime,
    *,
    external_id: str | None = None,
) -> SystemEvent:
    """`message_sent` / `message_failed` / `message_suppressed` of one message; `messageId` is the
    message's id as the API shows it, `channel` null when suppressed (no accepted channel). The
    externalId is `message-<id>-<sent|failed>` unless given (a suppressed message's derives from its
    delivery id: `domain.campaigns.outgoing.suppressed_event_id`)."""
    return SystemEvent(
        member_id,
        member_external_id,
        external_id or f"message-{message_id}-{kind.removeprefix('message_')}",
        kind,
        at,
        {"messageId": str(message_id), "template": template, "channel": channel, "segment": segment},
    )
