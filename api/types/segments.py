"""Segment, Tag, RfmScore and the size history."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, cast

import strawberry
from strawberry.scalars import JSON

from api.authorization import field_scope
from api.context import Info
from api.fanout import SharedEvent
from api.pagination import decode_cursor, page_size
from api.types.campaigns import SegmentTrigger
from api.types.enums import MembershipChange, SegmentKind
from api.types.members import MemberConnection, member_connection
from domain import models
from domain.auth.scopes import Scope
from domain.segments.conditions import parse_condition
from domain.segments.service import rule_of


@strawberry.type
class SegmentSizePoint:
    at: datetime = strawberry.field(description="Start of the UTC day; size is as of its end")
    size: int
    entered: int
    left: int


class ChangeRow(Protocol):
    """A change log row as the domain hands it out (a ChangeView or a LiveChange)."""

    @property
    def id(self) -> int: ...
    @property
    def segment_key(self) -> str: ...
    @property
    def member_external_id(self) -> str: ...
    @property
    def change(self) -> str: ...
    @property
    def at(self) -> datetime: ...


@strawberry.type(description="One member entering or leaving one segment")
class SegmentChangeEvent(SharedEvent):
    cursor: str = strawberry.field(
        description="Position in the program's change log: pass it as `since` to resume after this change"
    )
    segment_key: str
    member_external_id: str
    change: MembershipChange
    at: datetime

    @classmethod
    def of(cls, view: ChangeRow) -> SegmentChangeEvent:
        return cls(
            cursor=str(view.id),
            segment_key=view.segment_key,
            member_external_id=view.member_external_id,
            change=MembershipChange(view.change),
            at=view.at,
        )

    def shared_key(self) -> tuple[str, str, str, MembershipChange, datetime]:
        """Every field: live subscribers of one selection share the payload (api/fanout.py)."""
        return (self.cursor, self.segment_key, self.member_external_id, self.change, self.at)


@strawberry.type
class Segment:
    row: strawberry.Private[models.Segment]

    @strawberry.field
    def key(self) -> str:
        return self.row.key

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def kind(self) -> SegmentKind:
        return SegmentKind(self.row.kind)

    @strawberry.field(description="The canonical condition tree (segment-conditions.md); null for STATIC")
    def condition(self) -> JSON | None:
        return cast(JSON, self.row.condition)

    @strawberry.field(description="The same condition as a normalised rule; null for STATIC")
    def rule(self) -> str | None:
        return rule_of(self.row)

    @strawberry.field(description="Tag that members of this segment carry while they are in it")
    def applies_tag(self) -> str | None:
        return self.row.applies_tag

    @strawberry.field(description="What happens when a member enters or leaves (docs/triggers.md)")
    async def triggers(self, info: Info) -> list[SegmentTrigger]:
        field_scope(info, Scope.SEGMENTS_READ)
        found = await info.context.services.campaigns.triggers_of([self.row.id])
        return [SegmentTrigger.of(row) for row in found.get(self.row.id, [])]

    @strawberry.field
    async def size(self, info: Info) -> int:
        return await info.context.loaders.size_by_segment.load(self.row.id)

    @strawberry.field(
        description="Beyond the contract: what looks wrong in the condition now (event types never "
        "recorded in the program, attribute paths no member has); empty for STATIC"
    )
    async def warnings(self, info: Info) -> list[str]:
        program_id = field_scope(info, Scope.SEGMENTS_READ)
        if self.row.condition is None:
            return []
        node = parse_condition(self.row.condition)
        return await info.context.services.segments.warnings(program_id, node)

    @strawberry.field(description="Current members in id order")
    async def members(self, info: Info, first: int | None = 50, after: str | None = None) -> MemberConnection:
        program_id = field_scope(info, Scope.MEMBERS_READ)
        page = await info.context.services.members.list_members(
            program_id, page_size(first), decode_cursor("member", after), segment_key=self.row.key
        )
        return member_connection(page)

    @strawberry.field(description="The change log, oldest first, from `since` on (beyond the contract)")
    async def changes(
        self, info: Info, since: datetime | None = None, first: int | None = 50
    ) -> list[SegmentChangeEvent]:
        field_scope(info, Scope.SEGMENTS_READ)
        views = await info.context.services.segments.changes(self.row, since, page_size(first))
        return [SegmentChangeEvent.of(v) for v in views]

    @strawberry.field(
        description="Daily points from the change log; the last 30 days by default, at most 366"
    )
    async def history(
        self, info: Info, since: datetime | None = None, until: datetime | None = None
    ) -> list[SegmentSizePoint]:
        points = await info.context.services.segments.history(self.row.id, since, until)
        return [SegmentSizePoint(at=p.at, size=p.size, entered=p.entered, left=p.left) for p in points]
