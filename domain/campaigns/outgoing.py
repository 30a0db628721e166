"""Recording the messages a sender decided on: sendable ones go to the outbox, the others are SUPPRESSED.

Segment triggers (`triggers.py`) and experiment exposures (`domain.experiments.exposure`)
both write through `record_messages`, in the transaction of their cause. A message
with a channel (`messages.choose_channel`: consent) is a QUEUED `messages` row plus
an outbox row the delivery loop sends after commit. A message without one is a
SUPPRESSED row (error `NO_ACCEPTED_CHANNEL`) and, in the same transaction, a
`message_suppressed` event of the member (`domain.events.system`), so conditions
count it at once; nothing is queued, nothing is sent.

Each message carries a delivery id derived from its cause (trigger and change, or
experiment and member). A replayed cause finds it already recorded (its outbox row,
or its `message_suppressed` event, whose externalId derives from the delivery id)
and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.messages import NO_ACCEPTED_CHANNEL, MessageStatus
from domain.campaigns.outbox import OutboxKind, Pending, enqueue, existing_deliveries
from domain.enums import Channel
from domain.events.system import MESSAGE_SUPPRESSED, message_event, record_system_events
from domain.events.writes import existing_event_hashes
from domain.models import Message


@dataclass(frozen=True)
class MessageDraft:
    """One message to record; `channel` None means the member accepted no channel."""

    member_id: int
    member_external_id: str
    segment_id: int | None
    segment_key: str
    template: str
    channel: Channel | None
    delivery_id: str
    #: What the outbox payload carries beside channel, template, member and segment.
    context: dict[str, Any]


def suppressed_event_id(delivery_id: str) -> str:
    """The externalId of a suppressed message's `message_suppressed` event: a replay finds it."""
    return f"message-{delivery_id}-suppressed"


async def record_messages(
    session: AsyncSession, program_id: int, drafts: Sequence[MessageDraft], now: datetime
) -> None:
    """Write the messages not recorded yet: rows, outbox rows for the sendable, events for the suppressed."""
    drafts = await _not_yet_recorded(session, program_id, drafts)
    if not drafts:
        return
    rows = [
        {
            "program_id": program_id,
            "member_id": d.member_id,
            "segment_id": d.segment_id,
            "segment_key": d.segment_key,
            "channel": None if d.channel is None else d.channel.value,
            "template": d.template,
            "status": (MessageStatus.SUPPRESSED if d.channel is None else MessageStatus.QUEUED).value,
            "error": NO_ACCEPTED_CHANNEL if d.channel is None else None,
            "created_at": now,
        }
        for d in drafts
    ]
    table = cast(Table, Message.__table__)
    ids = list(await session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))
    items = [
        Pending(
            OutboxKind.MESSAGE,
            d.delivery_id,
            {
                "channel": d.channel.value,
                "template": d.template,
                "member": d.member_external_id,
                "segment": d.segment_key,
                **d.context,
            },
            message_id=message_id,
        )
        for d, message_id in zip(drafts, ids, strict=True)
        if d.channel is not None
    ]
    await enqueue(session, program_id, items, now)
    suppressed = [
        message_event(
            MESSAGE_SUPPRESSED,
            message_id,
            d.member_id,
            d.member_external_id,
            d.template,
            None,
            d.segment_key,
            now,
            external_id=suppressed_event_id(d.delivery_id),
        )
        for d, message_id in zip(drafts, ids, strict=True)
        if d.channel is None
    ]
    await record_system_events(session, program_id, suppressed, now)


async def _not_yet_recorded(
    session: AsyncSession, program_id: int, drafts: Sequence[MessageDraft]
) -> list[MessageDraft]:
    """Drop what a replay of the same cause already wrote (same delivery id)."""
    if not drafts:
        return []
    # both lookups for every draft: the member's channels may have changed since the first attempt
    queued = await existing_deliveries(session, [d.delivery_id for d in drafts])
    suppressed = await existing_event_hashes(
        session, program_id, [suppressed_event_id(d.delivery_id) for d in drafts]
    )
    return [
        d
        for d in drafts
        if d.delivery_id not in queued and suppressed_event_id(d.delivery_id) not in suppressed
    ]
