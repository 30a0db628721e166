"""Program, Organization, Member and their connections."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from api.pagination import decode_cursor, encode_cursor, page_size
from api.types.enums import Channel, MemberKind, ProgramKind
from api.types.ledger import LedgerConnection, PageInfo, ledger_connection
from domain import models
from domain.auth.scopes import Scope
from domain.members.service import Page, check_page_size


@strawberry.type
class Program:
    row: strawberry.Private[models.Program]

    @strawberry.field
    def key(self) -> str:
        return self.row.key

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def kind(self) -> ProgramKind:
        return ProgramKind(self.row.kind)

    @strawberry.field(description="Events for unknown members create them (beyond the contract)")
    def auto_create_members(self) -> bool:
        return bool(self.row.settings.get("autoCreateMembers", False))


@strawberry.type(description="A B2B dealer company or a B2E department")
class Organization:
    row: strawberry.Private[models.Organization]

    @strawberry.field
    def external_id(self) -> str:
        return self.row.external_id

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def attributes(self) -> JSON:
        return cast(JSON, self.row.attributes)

    @strawberry.field
    async def members(self, info: Info, first: int | None = 50, after: str | None = None) -> MemberConnection:
        program_id = info.context.principal.require(Scope.MEMBERS_READ)
        size = page_size(first)
        check_page_size(size)
        key = (program_id, self.row.id, size, decode_cursor("member", after))
        return member_connection(await info.context.loaders.members_page_by_organization.load(key))


@strawberry.type
class Member:
    row: strawberry.Private[models.Member]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def external_id(self) -> str:
        return self.row.external_id

    @strawberry.field
    def kind(self) -> MemberKind:
        return MemberKind(self.row.kind)

    @strawberry.field
    async def organization(self, info: Info) -> Organization | None:
        if self.row.organization_id is None:
            return None
        row = await info.context.loaders.organization_by_id.load(self.row.organization_id)
        return None if row is None else Organization(row=row)

    @strawberry.field(description="Demographics, device, preferences: free-form JSON object")
    def attributes(self) -> JSON:
        return cast(JSON, self.row.attributes)

    @strawberry.field(description="Channels the member accepts messages on, in preference order")
    def channels(self) -> list[Channel]:
        return [Channel(c) for c in self.row.channels]

    @strawberry.field(description="Posted points only")
    def points_balance(self) -> int:
        return self.row.points_balance

    @strawberry.field(description="Accruals held for fraud review")
    def pending_points(self) -> int:
        return self.row.pending_points

    @strawberry.field(description="Sign-up date given by the integration; defaults to createdAt")
    def joined_at(self) -> datetime:
        return self.row.joined_at

    @strawberry.field(description="Newest first")
    async def ledger(self, info: Info, first: int | None = 50, after: str | None = None) -> LedgerConnection:
        size = page_size(first)
        check_page_size(size)
        key = (self.row.id, size, decode_cursor("ledger", after))
        return ledger_connection(await info.context.loaders.ledger_page_by_member.load(key))

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type
class MemberEdge:
    cursor: str
    node: Member


@strawberry.type
class MemberConnection:
    edges: list[MemberEdge]
    page_info: PageInfo
    total_count: int


def member_connection(page: Page) -> MemberConnection:
    edges = [MemberEdge(cursor=encode_cursor("member", m.id), node=Member(row=m)) for m in page.items]
    return MemberConnection(
        edges=edges,
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
        total_count=page.total,
    )
