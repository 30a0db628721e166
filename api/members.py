"""Queries and mutations on members and organizations."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from api.pagination import decode_cursor, page_size
from api.referrals import ReferralSignup
from api.types.enums import Channel, MemberKind
from api.types.members import Member, MemberConnection, member_connection
from domain.auth.principal import PrincipalKind
from domain.errors import Forbidden, InvalidInput
from domain.members.service import MemberUpsert, OrganizationUpsert


@strawberry.input
class OrganizationInput:
    external_id: str
    name: str
    attributes: JSON | None = None
    parent_external_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Must exist (earlier in the list or stored); cycles refused; null: at the top; "
        "left out: the stored parent stays",
    )


@strawberry.input
class MemberInput:
    external_id: str
    kind: MemberKind | None = MemberKind.CUSTOMER
    organization_external_id: str | None = strawberry.field(
        default=None, description="An unknown one is created with name = externalId"
    )
    attributes: JSON | None = strawberry.field(
        default=None, description="Merged into the stored attributes; a null value removes a key"
    )
    channels: list[Channel] | None = None
    joined_at: datetime | None = None
    referral_code: str | None = strawberry.field(
        default=None,
        description="Another member's referral code; counts only when this item creates the member "
        "(answered per item in `referrals`)",
    )


@strawberry.type
class UpsertMembersPayload:
    upserted: int
    referrals: list[ReferralSignup] = strawberry.field(
        default_factory=list, description="One answer per item that carried a referralCode"
    )


@strawberry.type
class UpsertOrganizationsPayload:
    upserted: int


def _json_object(value: object, field: str) -> dict[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be a JSON object")
    return value


@strawberry.type
class MemberQueries:
    @strawberry.field(description="The member of the member token")
    async def me(self, info: Info) -> Member:
        principal = info.context.principal  # a member token: domain/auth/policy.py
        return Member(
            row=await info.context.services.members.get_by_id(principal.program_id, principal.subject_id)
        )

    @strawberry.field(description="Admin / integration; a member token may read only itself")
    async def member(self, info: Info, external_id: str) -> Member | None:
        principal = info.context.principal
        row = await info.context.services.members.get(principal.program_id, external_id)
        if principal.kind == PrincipalKind.MEMBER and (row is None or row.id != principal.subject_id):
            raise Forbidden("a member token reads only its own member")
        return None if row is None else Member(row=row)

    @strawberry.field(
        description="Everything held about the member, as one JSON document (docs/privacy.md); "
        "needs members:export"
    )
    async def export_member(self, info: Info, external_id: str) -> JSON:
        program_id = info.context.principal.program_id
        return cast(JSON, await info.context.services.exports.export(program_id, external_id))

    @strawberry.field(description="Members in creation order, at most 500 a page")
    async def members(
        self,
        info: Info,
        segment_key: str | None = None,
        tag: str | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> MemberConnection:
        program_id = info.context.principal.program_id
        after_id = decode_cursor("member", after)
        page = await info.context.services.members.list_members(
            program_id, page_size(first), after_id, segment_key=segment_key, tag=tag
        )
        return member_connection(page)


@strawberry.type
class MemberMutations:
    @strawberry.mutation
    async def upsert_organizations(
        self, info: Info, organizations: list[OrganizationInput]
    ) -> UpsertOrganizationsPayload:
        program_id = info.context.principal.program_id
        inputs = [
            OrganizationUpsert(
                o.external_id,
                o.name,
                _json_object(o.attributes, f"organizations[{i}].attributes"),
                parent_external_id=None if o.parent_external_id is strawberry.UNSET else o.parent_external_id,
                sets_parent=o.parent_external_id is not strawberry.UNSET,
            )
            for i, o in enumerate(organizations)
        ]
        upserted = await info.context.services.members.upsert_organizations(program_id, inputs)
        return UpsertOrganizationsPayload(upserted=upserted)

    @strawberry.mutation
    async def upsert_members(self, info: Info, members: list[MemberInput]) -> UpsertMembersPayload:
        program_id = info.context.principal.program_id
        inputs = [
            MemberUpsert(
                external_id=m.external_id,
                kind=MemberKind(m.kind or MemberKind.CUSTOMER).value,
                organization_external_id=m.organization_external_id,
                attributes=_json_object(m.attributes, f"members[{i}].attributes"),
                channels=None if m.channels is None else [Channel(c).value for c in m.channels],
                joined_at=m.joined_at,
                referral_code=m.referral_code,
            )
            for i, m in enumerate(members)
        ]
        done = await info.context.services.members.upsert_members_with_referrals(program_id, inputs)
        return UpsertMembersPayload(
            upserted=done.upserted, referrals=[ReferralSignup.of(r) for r in done.referrals]
        )

    @strawberry.mutation(
        description="Right to erasure (docs/privacy.md): deletes the member's personal data, keeps its "
        "amounts under a pseudonym; needs members:erase"
    )
    async def erase_member(self, info: Info, external_id: str) -> bool:
        principal = info.context.principal
        await info.context.services.erasure.erase(principal.program_id, external_id, principal.operator)
        return True
