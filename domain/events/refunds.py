"""Refunds: an event of type `refund` whose `properties.refundOf` names an earlier event.

Runs inside the batch's transaction, after the batch's accruals are posted (so a
refund may follow its purchase in the same batch). A refund posts a REVERSAL of the
original event's POSTED accrual (event_id = the original event, so leaderboards
count it in the original period), moves the balance (never below zero), rebuilds
the original event's daily bucket without it and marks the member's standings.
The original event stays ACCEPTED; its reversal entry (idempotency key
`refund:<externalId>`) is the refund link. See docs/ledger.md, "Refunds".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, exists, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.types import amount_to_units
from domain.enums import AccrualStatus, EntryKind, EventStatus
from domain.events.writes import EventRow, add_to_aggregates, day_of
from domain.ledger.service import move_balance, request_hash
from domain.models import Event, EventAggregate, LedgerEntry, Member
from domain.standings import mark_standings

REFUND_TYPE = "refund"
#: The property naming the refunded event's externalId (exactly this key).
REFUND_OF = "refundOf"
REFUND_KEY_PREFIX = "refund:"


@dataclass(frozen=True)
class Refunded:
    """What a refund changed: the original event's member, type and occurredAt."""

    member_id: int
    event_type: str
    occurred_at: datetime


@dataclass(frozen=True)
class RefundOutcome:
    external_id: str
    status: EventStatus
    message: str | None


class RefundRejected(Exception):
    pass


async def apply_refunds(
    session: AsyncSession,
    program_id: int,
    rows: dict[int, EventRow],
    inserted: dict[str, int],
    now: datetime,
) -> tuple[dict[int, RefundOutcome], list[Refunded]]:
    """Apply the batch's refund events in batch order; rejected ones become REJECTED in `rows`."""
    outcomes: dict[int, RefundOutcome] = {}
    refunded: list[Refunded] = []
    accepted: list[tuple[int, Any]] = []
    for i in sorted(rows):
        row = rows[i]
        event = row.event
        event_id = inserted.get(event.external_id)
        if event_id is None:  # a concurrent batch recorded it first
            outcomes[i] = RefundOutcome(
                event.external_id, EventStatus.DUPLICATE, "externalId already recorded"
            )
            continue
        if row.status != EventStatus.ACCEPTED:
            outcomes[i] = RefundOutcome(event.external_id, EventStatus(row.status), row.message)
            continue
        try:
            change, points, original = await _refund(session, program_id, row, now)
        except RefundRejected as rejection:
            message = str(rejection)
            await _set_event(session, event_id, EventStatus.REJECTED, message)
            rows[i] = replace(row, status=EventStatus.REJECTED.value, message=message)
            outcomes[i] = RefundOutcome(event.external_id, EventStatus.REJECTED, message)
            continue
        message = f"refunded {original}: -{points} points"
        await _set_event(session, event_id, EventStatus.ACCEPTED, message)
        rows[i] = replace(row, message=message)
        outcomes[i] = RefundOutcome(event.external_id, EventStatus.ACCEPTED, message)
        accepted.append((row.member_id, event))
        refunded.append(change)
    await add_to_aggregates(session, program_id, accepted)
    await mark_standings(session, program_id, ((m, e.occurred_at) for m, e in accepted))
    return outcomes, refunded


async def _set_event(session: AsyncSession, event_id: int, status: EventStatus, message: str) -> None:
    table = cast(Table, Event.__table__)
    await session.execute(
        update(table).where(table.c.id == event_id).values(status=status.value, message=message[:500])
    )


async def _refund(
    session: AsyncSession, program_id: int, row: EventRow, now: datetime
) -> tuple[Refunded, int, str]:
    event = row.event
    of = event.properties.get(REFUND_OF) if isinstance(event.properties, dict) else None
    if not isinstance(of, str) or not of:
        raise RefundRejected(f"properties.{REFUND_OF}: the externalId of the refunded event is required")
    events = cast(Table, Event.__table__)
    original = (
        await session.execute(
            select(
                events.c.id, events.c.member_id, events.c.type, events.c.occurred_at, events.c.status
            ).where(events.c.program_id == program_id, events.c.external_id == of)
        )
    ).first()
    if original is None:
        raise RefundRejected(f"{REFUND_OF}: no event {of!r} in this program")
    if original.member_id != row.member_id:
        raise RefundRejected(f"{REFUND_OF}: event {of!r} belongs to another member")
    ledger = cast(Table, LedgerEntry.__table__)
    accrual = (
        await session.execute(
            select(ledger.c.id, ledger.c.points, ledger.c.status).where(  # the unique key's index
                ledger.c.program_id == program_id, ledger.c.idempotency_key == f"event:{of}"
            )
        )
    ).first()
    if accrual is None or accrual.points <= 0:
        raise RefundRejected(f"{REFUND_OF}: event {of!r} earned no points to refund")
    if accrual.status != AccrualStatus.POSTED.value:
        raise RefundRejected(f"{REFUND_OF}: the accrual of {of!r} is {accrual.status}, not posted")
    already = (
        await session.execute(select(ledger.c.id).where(ledger.c.reverses_entry_id == accrual.id))
    ).first()
    if already is not None:
        raise RefundRejected(f"{REFUND_OF}: event {of!r} has already been refunded or reversed")
    points = int(accrual.points)
    balance = int(
        (await session.execute(select(Member.points_balance).where(Member.id == row.member_id))).scalar_one()
    )
    if balance < points:
        raise RefundRejected(f"refund of {of} would take {points} points but the balance is {balance}")
    await move_balance(session, row.member_id, -points, what="refund")
    reason = f"refund {event.external_id}"[:500]
    await session.execute(
        insert(ledger).values(
            program_id=program_id,
            member_id=row.member_id,
            points=-points,
            status=AccrualStatus.POSTED.value,
            kind=EntryKind.REVERSAL.value,
            reason=reason,
            event_id=original.id,
            reverses_entry_id=accrual.id,
            idempotency_key=f"{REFUND_KEY_PREFIX}{of}"[:200],
            request_hash=request_hash(EntryKind.REVERSAL, accrual.id, reason),
            created_at=now,
        )
    )
    occurred_at = _utc(original.occurred_at)
    await rebuild_bucket(session, program_id, row.member_id, original.type, day_of(occurred_at))
    await mark_standings(session, program_id, [(row.member_id, occurred_at)])
    return Refunded(row.member_id, original.type, occurred_at), points, of


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def rebuild_bucket(
    session: AsyncSession, program_id: int, member_id: int, event_type: str, day: date
) -> None:
    """Recompute one member x type x day bucket exactly from its ACCEPTED, unrefunded events."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    events = cast(Table, Event.__table__)
    ledger = cast(Table, LedgerEntry.__table__)
    refunded = select(ledger.c.event_id).where(
        ledger.c.member_id == member_id,
        ledger.c.kind == EntryKind.REVERSAL.value,
        ledger.c.idempotency_key.like(f"{REFUND_KEY_PREFIX}%"),
        ledger.c.event_id.is_not(None),
    )
    result = await session.execute(
        select(events.c.occurred_at, events.c.amount).where(
            events.c.program_id == program_id,
            events.c.member_id == member_id,
            events.c.type == event_type,
            events.c.status == EventStatus.ACCEPTED.value,
            events.c.occurred_at >= start,
            events.c.occurred_at < start + timedelta(days=1),
            events.c.id.not_in(refunded),
        )
    )
    found: Sequence[Any] = result.all()
    aggregates = cast(Table, EventAggregate.__table__)
    where = (
        aggregates.c.member_id == member_id,
        aggregates.c.event_type == event_type,
        aggregates.c.day == day,
    )
    if not found:
        await session.execute(delete(aggregates).where(*where))
        return
    units = [amount_to_units(amount) for _, amount in found if amount is not None]
    times = [_utc(at) for at, _ in found]
    await session.execute(
        update(aggregates)
        .where(*where)
        .values(
            count=len(found),
            amount_count=len(units),
            amount_sum=sum(units),
            amount_min=min(units) if units else None,
            amount_max=max(units) if units else None,
            first_at=min(times),
            last_at=max(times),
        )
    )


def not_refunded(events: Any) -> ColumnElement[bool]:
    """For queries over raw events (a table or the Event model): the event has no refund reversal.

    Reads the partial index of reversals (`ix_ledger_reversals`): a probe per event in a member's
    query, a hash of the program's few reversals in a batch one, however big the ledger grows.
    """
    ledger = cast(Table, LedgerEntry.__table__).alias("refunds")  # never correlated with an outer ledger
    return ~exists().where(
        ledger.c.kind == EntryKind.REVERSAL.value,
        ledger.c.program_id == events.program_id,
        ledger.c.idempotency_key == literal(REFUND_KEY_PREFIX) + events.external_id,
    )
