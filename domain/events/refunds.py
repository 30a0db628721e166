"""Refunds: an event of type `refund` whose `properties.refundOf` names an earlier event.

Runs inside the batch's transaction, after the batch's accruals are posted (so a
refund may follow its purchase in the same batch). This module checks a refund;
`domain.ledger.posting.post_refund` posts it: a REVERSAL of the original event's
POSTED accrual (event_id = the original event, so leaderboards count it in the
original period), the balance moved (never below zero), the original event's daily
bucket rebuilt without it and the member's standings marked.
The original event stays ACCEPTED; its reversal entry (idempotency key
`refund:<externalId>`) is the refund link. See docs/ledger.md, "Refunds".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, exists, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.enums import AccrualStatus, EntryKind, EventStatus
from domain.events.writes import EventRow
from domain.ledger.posting import Accrual, Refund, post_accruals, post_refund
from domain.ledger.rows import REFUND_KEY_PREFIX
from domain.models import Event, LedgerEntry, Member

REFUND_TYPE = "refund"
#: The property naming the refunded event's externalId (exactly this key).
REFUND_OF = "refundOf"


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
    rows: Mapping[int, EventRow],
    inserted: Mapping[str, int],
    now: datetime,
) -> dict[int, RefundOutcome]:
    """Check and post the batch's refund events in batch order; returns each one's answer.

    A refund that passes its checks posts its reversal at once (`posting.post_refund`), so a
    later refund in the batch sees the moved balance. The accepted refund events then count
    as accepted events (0 points) through `posting.post_accruals`.
    """
    outcomes: dict[int, RefundOutcome] = {}
    accepted: list[Accrual] = []
    for i in sorted(rows):
        row = rows[i]
        event = row.event
        event_id = inserted[event.external_id]
        if row.status != EventStatus.ACCEPTED:
            outcomes[i] = RefundOutcome(event.external_id, row.status, row.message)
            continue
        try:
            refund = await _checked(session, program_id, row)
        except RefundRejected as rejection:
            message = str(rejection)
            await _set_event(session, event_id, EventStatus.REJECTED, message)
            outcomes[i] = RefundOutcome(event.external_id, EventStatus.REJECTED, message)
            continue
        await post_refund(session, program_id, refund, now)
        message = f"refunded {refund.refunded}: -{refund.points} points"
        await _set_event(session, event_id, EventStatus.ACCEPTED, message)
        outcomes[i] = RefundOutcome(event.external_id, EventStatus.ACCEPTED, message)
        accepted.append(Accrual(row.member_id, event, event_id, 0, AccrualStatus.POSTED))
    await post_accruals(session, program_id, accepted, now)
    return outcomes


async def _set_event(session: AsyncSession, event_id: int, status: EventStatus, message: str) -> None:
    table = cast(Table, Event.__table__)
    await session.execute(
        update(table).where(table.c.id == event_id).values(status=status.value, message=message[:500])
    )


async def _checked(session: AsyncSession, program_id: int, row: EventRow) -> Refund:
    """The refund `row` asks for, once checked; RefundRejected says why it cannot be."""
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
    return Refund(
        row.member_id,
        points,
        int(accrual.id),
        int(original.id),
        str(original.type),
        original.occurred_at,
        of,
        f"refund {event.external_id}",
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
