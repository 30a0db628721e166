"""Queries and mutations on segments and tags."""

from __future__ import annotations

from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from api.types.enums import SegmentKind
from api.types.members import Member
from api.types.segments import Segment
from domain.segments.conditions import condition_to_json
from domain.segments.rules import render_rule
from domain.segments.service import SegmentDraft


@strawberry.input
class SegmentInput:
    key: str
    name: str
    kind: SegmentKind
    condition: JSON | None = strawberry.field(default=None, description="Give condition or rule for DYNAMIC")
    rule: str | None = None
    applies_tag: str | None = None

    def draft(self) -> SegmentDraft:
        kind = SegmentKind(self.kind).value
        return SegmentDraft(self.key, self.name, kind, self.condition, self.rule, self.applies_tag)


@strawberry.type
class ImportPayload:
    imported: int
    rejected_rows: list[str] = strawberry.field(description='Each "line N: reason"')


@strawberry.type(description="A condition checked and counted without storing a segment")
class SegmentPreview:
    rule: str = strawberry.field(description="The normalised rule")
    condition: JSON = strawberry.field(description="The canonical condition tree")
    size: int = strawberry.field(description="Members the condition selects now")
    warnings: list[str] = strawberry.field(
        description="Beyond the contract: event types never recorded in the program, attribute paths "
        "no member has (e.g. count(vist, 30d))"
    )
    sample: list[Member] = strawberry.field(
        description="Beyond the contract: up to 10 of the members it selects, in id order"
    )
    overlaps: list[SegmentPreviewOverlap] = strawberry.field(
        description="Beyond the contract: each existing segment sharing members with it, most shared first"
    )


@strawberry.type(description="Members a previewed condition shares with an existing segment")
class SegmentPreviewOverlap:
    segment_key: str
    both: int = strawberry.field(description="Members in the segment that the condition selects too")


@strawberry.type
class SegmentQueries:
    @strawberry.field(description="Validate a rule or condition and count its members; stores nothing")
    async def preview_segment(
        self, info: Info, rule: str | None = None, condition: JSON | None = None
    ) -> SegmentPreview:
        program_id = info.context.principal.program_id
        preview = await info.context.services.segments.preview(program_id, condition, rule)
        warnings = await info.context.services.segments.warnings(program_id, preview.node)
        return SegmentPreview(
            rule=render_rule(preview.node),
            condition=cast(JSON, condition_to_json(preview.node)),
            size=preview.size,
            warnings=warnings,
            sample=[Member(row=row) for row in preview.sample],
            overlaps=[SegmentPreviewOverlap(segment_key=key, both=both) for key, both in preview.overlaps],
        )

    @strawberry.field
    async def segment(self, info: Info, key: str) -> Segment | None:
        program_id = info.context.principal.program_id
        row = await info.context.services.segments.get(program_id, key)
        return None if row is None else Segment(row=row)

    @strawberry.field(description="Every segment of the program, by key")
    async def segments(self, info: Info) -> list[Segment]:
        program_id = info.context.principal.program_id
        return [Segment(row=row) for row in await info.context.services.segments.list_segments(program_id)]


@strawberry.type
class SegmentMutations:
    @strawberry.mutation(description="Membership is computed at once; nothing is stored on a refusal")
    async def create_segment(self, info: Info, input: SegmentInput) -> Segment:
        program_id = info.context.principal.program_id
        return Segment(
            row=await info.context.services.segments.create(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Replaces the definition and recomputes membership")
    async def update_segment(self, info: Info, input: SegmentInput) -> Segment:
        program_id = info.context.principal.program_id
        return Segment(
            row=await info.context.services.segments.update(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Refused (CONFLICT) while another segment reads this one")
    async def delete_segment(self, info: Info, key: str) -> bool:
        program_id = info.context.principal.program_id
        return await info.context.services.segments.delete(
            program_id, key, actor=info.context.principal.operator
        )

    @strawberry.mutation(
        description='Header "externalId", one id per row; adds to STATIC segment KEY, created if missing'
    )
    async def import_static_segment(self, info: Info, key: str, csv: str) -> ImportPayload:
        program_id = info.context.principal.program_id
        result = await info.context.services.segments.import_static(
            program_id, key, csv, actor=info.context.principal.operator
        )
        return ImportPayload(imported=result.imported, rejected_rows=result.rejected_rows)

    @strawberry.mutation(
        description="Add and remove listed members of a STATIC segment (beyond the contract)"
    )
    async def change_static_segment(
        self,
        info: Info,
        key: str,
        add_member_external_ids: list[str] | None = None,
        remove_member_external_ids: list[str] | None = None,
    ) -> Segment:
        program_id = info.context.principal.program_id
        add, remove = add_member_external_ids or [], remove_member_external_ids or []
        row = await info.context.services.segments.change_static(
            program_id, key, add, remove, actor=info.context.principal.operator
        )
        return Segment(row=row)

    @strawberry.mutation(
        description="Refreshes RFM/ABC, then re-evaluates the segments (all when null); returns members seen"
    )
    async def recompute_segments(self, info: Info, keys: list[str] | None = None) -> int:
        program_id = info.context.principal.program_id
        return await info.context.services.segments.recompute(program_id, keys)

    @strawberry.mutation
    async def add_tag(self, info: Info, member_external_id: str, tag: str) -> Member:
        program_id = info.context.principal.program_id
        return Member(row=await info.context.services.tags.add_tag(program_id, member_external_id, tag))

    @strawberry.mutation(description="Removes a manual tag; a segment's tag goes when the member leaves it")
    async def remove_tag(self, info: Info, member_external_id: str, tag: str) -> Member:
        program_id = info.context.principal.program_id
        return Member(row=await info.context.services.tags.remove_tag(program_id, member_external_id, tag))
