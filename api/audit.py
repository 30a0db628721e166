"""The audit log: who changed what (DESIGN.md, "Privacy and governance"; docs/security.md)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from api.pagination import decode_cursor, encode_cursor, page_size
from api.types.ledger import PageInfo
from domain import models
from domain.governance.audit_log import AuditPage, check_first

CURSOR = "audit"


@strawberry.type
class AuditEntry:
    at: datetime
    actor: str = strawberry.field(description='an admin\'s e-mail, "key:<api key name>", or "system"')
    action: str = strawberry.field(description='the mutation\'s name, e.g. "updateSegment"')
    target: str | None = strawberry.field(description="the key or externalId acted on")
    before: JSON | None = strawberry.field(description="the definition or value before; null on create")
    after: JSON | None = strawberry.field(description="after; null on delete")


@strawberry.type
class AuditEntryEdge:
    cursor: str
    node: AuditEntry


@strawberry.type
class AuditEntryConnection:
    edges: list[AuditEntryEdge]
    page_info: PageInfo


def _entry(row: models.AuditEntry) -> AuditEntry:
    return AuditEntry(
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        before=cast(JSON, row.before),
        after=cast(JSON, row.after),
    )


def _connection(page: AuditPage) -> AuditEntryConnection:
    edges = [AuditEntryEdge(cursor=encode_cursor(CURSOR, e.id), node=_entry(e)) for e in page.entries]
    return AuditEntryConnection(
        edges=edges,
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
    )


@strawberry.type
class AuditQueries:
    @strawberry.field(description="Admin OWNER/ADMIN (scope audit:read): the program's changes, newest first")
    async def audit_log(
        self,
        info: Info,
        first: int | None = 50,
        after: str | None = None,
        actor: str | None = None,
        action: str | None = None,
    ) -> AuditEntryConnection:
        program_id = info.context.principal.program_id
        size = page_size(first)
        check_first(size)  # `first` is named before a bad `after`
        page = await info.context.services.audit_log.entries(
            program_id,
            first=size,
            before_id=decode_cursor(CURSOR, after),
            actor=actor,
            action=action,
        )
        return _connection(page)
