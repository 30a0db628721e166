"""The outbox delivery loop: claim due rows, deliver them outside any transaction, record the outcome.

One pass: (1) a short transaction claims up to `batch_size` due PENDING rows
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so workers never claim the same row),
counts the attempt and sets a lease (`locked_until`); (2) the webhooks are
called and messages handed to the provider with no transaction open; (3) a
second short transaction records each outcome, unless the row changed hands
meanwhile (its lease ran out and another worker claimed it). A worker that dies
between (1) and (3) leaves rows that become due again when their lease ends:
delivery is at least once, and receivers deduplicate on the delivery id.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.messages import MessageProvider, MessageStatus, OutgoingMessage
from domain.campaigns.outbox import DEACTIVATED, OUTBOX_TOPIC, OutboxKind, OutboxStatus, RetryPolicy
from domain.campaigns.webhooks import WebhookRequest, WebhookSender
from domain.clock import Clock
from domain.db.engine import Database
from domain.events.system import (
    MESSAGE_FAILED,
    MESSAGE_SENT,
    SystemEvent,
    message_event,
    record_system_events,
)
from domain.models import Member, Message, OutboxItem, WebhookEndpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    id: int
    attempts: int
    kind: OutboxKind
    delivery_id: str
    payload: dict[str, Any]
    webhook: WebhookRequest | None
    message_id: int | None


@dataclass(frozen=True)
class Outcome:
    item: Claimed
    error: str | None


class OutboxDelivery:
    """A `domain.background.Loop`: wakes on the "outbox" topic or every `interval` seconds."""

    name = "outbox-delivery"
    topics = frozenset({OUTBOX_TOPIC})

    def __init__(
        self,
        db: Database,
        clock: Clock,
        provider: MessageProvider,
        sender: WebhookSender | None = None,
        policy: RetryPolicy | None = None,
        *,
        batch_size: int = 20,
        interval: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.provider = provider
        self.sender = sender or WebhookSender()
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.interval = interval
        self.rng = rng or random.Random()  # jitter, not secrecy

    async def run_once(self) -> bool:
        claimed = await self.claim()
        if not claimed:
            return False
        outcomes = await self.deliver(claimed)
        await self.record(outcomes)
        return len(claimed) == self.batch_size

    async def claim(self) -> list[Claimed]:
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            rows = list(
                await session.scalars(
                    select(OutboxItem)
                    .where(
                        OutboxItem.status == OutboxStatus.PENDING.value,
                        OutboxItem.next_attempt_at <= now,
                        or_(OutboxItem.locked_until.is_(None), OutboxItem.locked_until <= now),
                    )
                    .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            endpoint_ids = {r.endpoint_id for r in rows if r.endpoint_id is not None}
            endpoints = {
                e.id: e
                for e in await session.scalars(
                    select(WebhookEndpoint).where(WebhookEndpoint.id.in_(sorted(endpoint_ids)))
                )
            }
            claimed = []
            for row in rows:
                endpoint = endpoints[row.endpoint_id] if row.endpoint_id is not None else None
                if endpoint is not None and not endpoint.active:
                    # queued by a trigger that committed as the endpoint was being deactivated
                    row.status, row.last_error = OutboxStatus.DEAD.value, DEACTIVATED
                    continue
                row.attempts += 1
                row.locked_until = now + self.policy.lease
                webhook = None
                if endpoint is not None:
                    webhook = WebhookRequest(
                        endpoint.url,
                        endpoint.secret,
                        row.delivery_id,
                        str(row.payload.get("type", "")),
                        orjson.dumps(row.payload),
                    )
                claimed.append(
                    Claimed(
                        row.id,
                        row.attempts,
                        OutboxKind(row.kind),
                        row.delivery_id,
                        dict(row.payload),
                        webhook,
                        row.message_id,
                    )
                )
        return claimed

    async def deliver(self, claimed: list[Claimed]) -> list[Outcome]:
        """Attempt each delivery once, concurrently; no database transaction is open here."""
        async with self.sender.open() as webhooks:

            async def attempt(item: Claimed) -> Outcome:
                try:
                    if item.webhook is not None:
                        timestamp = int(self.clock.now().timestamp())
                        await webhooks.send(item.webhook, timestamp)
                    else:
                        assert item.message_id is not None
                        await self.provider.send(_message(item))
                except Exception as error:
                    return Outcome(item, (str(error) or type(error).__name__)[:1000])
                return Outcome(item, None)

            return list(await asyncio.gather(*(attempt(item) for item in claimed)))

    async def record(self, outcomes: list[Outcome]) -> None:
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            ended: dict[int, str] = {}  # message id -> the event type its outcome records
            for outcome in sorted(outcomes, key=lambda o: o.item.id):
                item = outcome.item
                row = await session.get(OutboxItem, item.id, with_for_update=True)
                if row is None or row.status != OutboxStatus.PENDING or row.attempts != item.attempts:
                    continue  # reclaimed after its lease ran out, or changed by an admin: theirs to record
                row.locked_until = None
                row.last_error = outcome.error
                message: dict[str, Any] = {}
                if outcome.error is None:
                    row.status = OutboxStatus.DELIVERED.value
                    row.delivered_at = now
                    message = {"status": MessageStatus.SENT.value, "sent_at": now, "error": None}
                elif row.attempts >= self.policy.max_attempts:
                    row.status = OutboxStatus.DEAD.value
                    message = {"status": MessageStatus.FAILED.value, "error": outcome.error}
                    log.warning(
                        "outbox %s (%s) is DEAD after %d attempts: %s",
                        row.delivery_id,
                        row.kind,
                        row.attempts,
                        outcome.error,
                    )
                else:
                    row.next_attempt_at = now + self.policy.delay(row.attempts, self.rng)
                    message = {"error": outcome.error}
                if row.message_id is not None:
                    await session.execute(
                        update(Message).where(Message.id == row.message_id).values(**message)
                    )
                    if "status" in message:
                        sent = message["status"] == MessageStatus.SENT.value
                        ended[row.message_id] = MESSAGE_SENT if sent else MESSAGE_FAILED
            await record_message_events(session, ended, now)


async def record_message_events(session: AsyncSession, ended: dict[int, str], now: datetime) -> None:
    """Each message that was sent or failed, as an event of its member (`domain.events.system`)."""
    if not ended:
        return
    rows = await session.execute(
        select(Message, Member.external_id)
        .join(Member, Member.id == Message.member_id)
        .where(Message.id.in_(sorted(ended)))
        .order_by(Message.id)
    )
    by_program: dict[int, list[SystemEvent]] = {}
    for message, member_external_id in rows:
        by_program.setdefault(message.program_id, []).append(
            message_event(
                ended[message.id],
                message.id,
                message.member_id,
                member_external_id,
                message.template,
                message.channel,
                message.segment_key,
                now,
            )
        )
    for program_id, events in by_program.items():
        await record_system_events(session, program_id, events, now)


def _message(item: Claimed) -> OutgoingMessage:
    assert item.message_id is not None
    payload = item.payload
    return OutgoingMessage(
        delivery_id=item.delivery_id,
        message_id=item.message_id,
        channel=str(payload["channel"]),
        template=str(payload["template"]),
        member_external_id=str(payload["member"]),
        variables={"segment": payload.get("segment"), "change": payload.get("change")},
    )
