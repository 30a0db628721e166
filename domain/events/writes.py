"""Set-based writes of the events of a batch (what posting writes is in domain/ledger/)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.dialect import insert_for
from domain.enums import AccrualStatus, EventStatus
from domain.events.validation import ValidEvent
from domain.models import Event


@dataclass(frozen=True)
class EventRow:
    event: ValidEvent
    member_id: int
    status: EventStatus
    #: The status of its ledger entry, when it earns points.
    entry_status: AccrualStatus
    points: int
    message: str | None


async def existing_event_hashes(
    session: AsyncSession, program_id: int, external_ids: Sequence[str]
) -> dict[str, str]:
    if not external_ids:
        return {}
    rows = await session.execute(
        select(Event.external_id, Event.content_hash).where(
            Event.program_id == program_id, Event.external_id.in_(external_ids)
        )
    )
    return {external_id: content_hash for external_id, content_hash in rows}  # noqa: C416 - rows are Row objects


async def insert_events(
    session: AsyncSession, program_id: int, rows: Sequence[EventRow], now: datetime
) -> dict[str, int]:
    """Insert in externalId order (a stable lock order); returns the ids of those that were new."""
    if not rows:
        return {}
    table = Event.__table__
    statement = (
        insert_for(session, table)
        .on_conflict_do_nothing(index_elements=[table.c.program_id, table.c.external_id])
        .returning(table.c.id, table.c.external_id)
    )
    params = [
        {
            "program_id": program_id,
            "external_id": r.event.external_id,
            "member_id": r.member_id,
            "type": r.event.type,
            "occurred_at": r.event.occurred_at,
            "amount": r.event.amount,
            "properties": r.event.properties,
            "status": r.status.value,
            "points_awarded": r.points if r.status == EventStatus.ACCEPTED else 0,
            "message": r.message,
            "content_hash": r.event.content_hash,
            "received_at": now,
        }
        for r in sorted(rows, key=lambda r: r.event.external_id)
    ]
    result = await session.execute(statement, params)
    return {external_id: event_id for event_id, external_id in result}
