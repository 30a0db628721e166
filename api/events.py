"""`recordEvents`: the POS/ERP ingest entry point."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types.arguments import InputContext
from strawberry.types.base import get_object_definition

from api.context import Info
from api.inputs import checked_per_item
from api.types.enums import EventStatus
from domain.events.validation import EventDraft


@checked_per_item  # domain/events/validation.py rejects a bad event alone
@strawberry.input
class EventInput:
    external_id: str = strawberry.field(description="Idempotency key: the same externalId twice is one event")
    member_external_id: str
    type: str = strawberry.field(description='e.g. "purchase", "visit", "login", "training_completed"')
    occurred_at: datetime
    amount: Decimal | None = strawberry.field(
        default=None, description="Money amount, in the program currency"
    )
    properties: JSON | None = None


def _event_from_input(cls: type[EventInput], value: Mapping[str, Any], _context: InputContext) -> EventInput:
    """Builds an EventInput straight from graphql-core's coerced value (its leaves are parsed already).

    strawberry's generic conversion resolves every field's type for every event; at
    1,000 events per call that was the API's largest cost on the ingest path.
    """
    return cls(
        external_id=value["externalId"],
        member_external_id=value["memberExternalId"],
        type=value["type"],
        occurred_at=value["occurredAt"],
        amount=value.get("amount"),
        properties=value.get("properties"),
    )


get_object_definition(EventInput, strict=True).from_input = _event_from_input


@strawberry.type
class EventResult:
    external_id: str
    status: EventStatus
    points_awarded: int = strawberry.field(
        description="Posted points; 0 when held, blocked, duplicate or rejected"
    )
    message: str | None = strawberry.field(description="Why REJECTED/BLOCKED/HELD_FOR_REVIEW/DUPLICATE")


@strawberry.type
class RecordEventsPayload:
    results: list[EventResult]


@strawberry.type
class EventMutations:
    @strawberry.mutation(description="Up to 1,000 events; results in input order")
    async def record_events(self, info: Info, events: list[EventInput]) -> RecordEventsPayload:
        program_id = info.context.principal.program_id
        drafts = [
            EventDraft(e.external_id, e.member_external_id, e.type, e.occurred_at, e.amount, e.properties)
            for e in events
        ]
        outcomes = await info.context.services.events.record_events(program_id, drafts)
        return RecordEventsPayload(
            results=[
                EventResult(
                    external_id=o.external_id,
                    status=o.status,
                    points_awarded=o.points_awarded,
                    message=o.message,
                )
                for o in outcomes
            ]
        )
