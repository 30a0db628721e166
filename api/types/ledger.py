"""LedgerEntry and its connection."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.pagination import encode_cursor
from api.types.enums import AccrualStatus, EntryKind
from domain import models
from domain.ledger.service import LedgerPage


@strawberry.type(description="A promotion that added points to an event's accrual (docs/promotions.md)")
class AppliedPromotion:
    key: str
    points: int = strawberry.field(description="What the promotion added (within the entry's points)")


@strawberry.type
class LedgerEntry:
    row: strawberry.Private[models.LedgerEntry]
    event_external_id: str | None = strawberry.field(description="The event that earned these points")

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="Positive accrual, negative redemption/reversal/expiry")
    def points(self) -> int:
        return self.row.points

    @strawberry.field
    def status(self) -> AccrualStatus:
        return AccrualStatus(self.row.status)

    @strawberry.field
    def kind(self) -> EntryKind:
        return EntryKind(self.row.kind)

    @strawberry.field(
        description="Who posted a manual entry (adjustPoints, redeemPoints, reverse): an admin's e-mail or "
        '"key:<api key name>"; null when automatic or a member token redeemed'
    )
    def actor(self) -> str | None:
        return self.row.actor

    @strawberry.field
    def reason(self) -> str:
        return self.row.reason

    @strawberry.field(
        description="An event accrual's promotions, in the order they applied (their points are in "
        "`points`); empty for other entries"
    )
    def promotions(self) -> list[AppliedPromotion]:
        return [AppliedPromotion(key=p["key"], points=p["points"]) for p in self.row.promotions or []]

    @strawberry.field(description="For a reversal: the id of the entry it reverses")
    def reverses_entry_id(self) -> strawberry.ID | None:
        return None if self.row.reverses_entry_id is None else strawberry.ID(str(self.row.reverses_entry_id))

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class LedgerEdge:
    cursor: str
    node: LedgerEntry


@strawberry.type
class LedgerConnection:
    edges: list[LedgerEdge]
    page_info: PageInfo


def ledger_entry(row: models.LedgerEntry, event_external_id: str | None = None) -> LedgerEntry:
    return LedgerEntry(row=row, event_external_id=event_external_id)


def ledger_connection(page: LedgerPage) -> LedgerConnection:
    edges = [
        LedgerEdge(cursor=encode_cursor("ledger", e.id), node=ledger_entry(e, _event_id(e)))
        for e in page.entries
    ]
    return LedgerConnection(
        edges=edges,
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
    )


def _event_id(entry: models.LedgerEntry) -> str | None:
    for prefix in ("event:", "refund:"):  # a refund's reversal names the refunded event
        if entry.idempotency_key.startswith(prefix):
            return entry.idempotency_key.removeprefix(prefix)
    return None
