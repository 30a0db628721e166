"""The transactional outbox: side effects written with their cause, delivered after commit.

A row is written in the transaction of the membership change that caused it, so
it exists exactly when the change committed. The delivery loop
(`delivery.py`) sends it at least once: PENDING until a 2xx (DELIVERED), retried
with capped exponential backoff and jitter, DEAD after `max_attempts`, when an
admin may retry it. Its `delivery_id` is derived from trigger and change, so a
replayed change finds its row already there and writes nothing.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.engine import announce
from domain.models import OutboxItem

#: Announced by every transaction that writes outbox rows: the delivery loop wakes on it.
OUTBOX_TOPIC = "outbox"
#: last_error of the deliveries a deactivated webhook endpoint still had queued (made DEAD unsent).
DEACTIVATED = "not sent: the endpoint was deactivated"
_NAMESPACE = uuid.UUID("5b0c1f8e-6f53-4c52-9d7e-2f1a0c3e9a41")


class OutboxKind(StrEnum):
    WEBHOOK = "WEBHOOK"
    MESSAGE = "MESSAGE"


class OutboxStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DEAD = "DEAD"


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) that fails waits min(cap, base * 2^(n-1)), minus up to `jitter` of it.

    Defaults: 30 s, 1 min, 2 min, 4 min, 8 min, 16 min, 32 min, then DEAD after
    the 8th attempt (about an hour of trying). The jitter only shortens a wait,
    so a wait never exceeds the schedule.
    """

    max_attempts: int = 8
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)
    jitter: float = 0.2
    #: How long a claimed row stays invisible to other workers (longer than one HTTP timeout).
    lease: timedelta = timedelta(seconds=60)

    def delay(self, attempts: int, rng: random.Random) -> timedelta:
        full: timedelta = min(self.cap, self.base * 2 ** max(attempts - 1, 0))
        return full * (1 - self.jitter * rng.random())


def delivery_id(trigger_id: int, change_id: int) -> str:
    """The id receivers deduplicate on: one per trigger and logged change, stable across retries."""
    return str(uuid.uuid5(_NAMESPACE, f"trigger:{trigger_id}:{change_id}"))


@dataclass(frozen=True)
class Pending:
    """An outbox row to write."""

    kind: OutboxKind
    delivery_id: str
    payload: dict[str, Any]
    endpoint_id: int | None = None
    message_id: int | None = None


async def existing_deliveries(session: AsyncSession, delivery_ids: list[str]) -> set[str]:
    """Which of these delivery ids are already in the outbox (a replayed change)."""
    if not delivery_ids:
        return set()
    rows = await session.scalars(
        select(OutboxItem.delivery_id).where(OutboxItem.delivery_id.in_(delivery_ids))
    )
    return set(rows)


async def enqueue(session: AsyncSession, program_id: int, items: list[Pending], now: datetime) -> None:
    """Write outbox rows in the caller's transaction; the delivery loop wakes once it commits."""
    if not items:
        return
    session.add_all(
        OutboxItem(
            program_id=program_id,
            kind=item.kind.value,
            delivery_id=item.delivery_id,
            endpoint_id=item.endpoint_id,
            message_id=item.message_id,
            payload=item.payload,
            status=OutboxStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for item in items
    )
    await session.flush()
    announce(session, OUTBOX_TOPIC)
