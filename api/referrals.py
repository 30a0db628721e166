"""Referrals (docs/promotions.md, "Referrals"): the program's settings, the referrals, reviewers'
decisions. Codes and signups are on Member and upsertMembers (api/members.py, api/types/members.py)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from domain.errors import InvalidInput
from domain.referrals.program import ReferralSettings
from domain.referrals.service import ReferralView
from domain.referrals.signup import ReferralOutcome
from domain.referrals.status import ReferralStatus

strawberry.enum(ReferralStatus, description="Where a referral stands (docs/promotions.md, Referrals)")


@strawberry.type(description="A program's referral settings")
class ReferralProgram:
    enabled: bool
    join_points: int = strawberry.field(description="Points the new member gets on joining with a code")
    referrer_points: int = strawberry.field(
        description="Points the referrer gets once the referred member's first qualifying event stuck"
    )
    wait_days: int = strawberry.field(
        description="The refund window: days after the qualifying event before the referrer is paid"
    )
    event_type: str = strawberry.field(description="The qualifying event type (purchase by default)")

    @classmethod
    def of(cls, settings: ReferralSettings) -> ReferralProgram:
        return cls(
            enabled=settings.enabled,
            join_points=settings.join_points,
            referrer_points=settings.referrer_points,
            wait_days=settings.wait_days,
            event_type=settings.event_type,
        )


@strawberry.input
class ReferralProgramInput:
    enabled: bool = True
    join_points: int = 0
    referrer_points: int = 0
    wait_days: int = 30
    event_type: str = "purchase"


@strawberry.type(description="One member signed up with another's referral code")
class Referral:
    id: strawberry.ID
    referrer_external_id: str
    referred_external_id: str
    code: str = strawberry.field(description="The code used; empty once its referrer is erased")
    status: ReferralStatus
    verdict: str = strawberry.field(description="The referral fraud rules' verdict at signup")
    findings: JSON = strawberry.field(description="[{rule, verdict, detail, shadow}] of the rules that found")
    created_at: datetime
    join_points: int
    qualifying_event_external_id: str | None
    due_at: datetime | None = strawberry.field(description="When the referrer is paid (WAITING)")
    referrer_points: int
    settled_at: datetime | None
    note: str | None

    @classmethod
    def of(cls, view: ReferralView) -> Referral:
        return cls(
            id=strawberry.ID(str(view.id)),
            referrer_external_id=view.referrer_external_id,
            referred_external_id=view.referred_external_id,
            code=view.code,
            status=view.status,
            verdict=view.verdict,
            findings=cast(JSON, view.findings),
            created_at=view.created_at,
            join_points=view.join_points,
            qualifying_event_external_id=view.qualifying_event_external_id,
            due_at=view.due_at,
            referrer_points=view.referrer_points,
            settled_at=view.settled_at,
            note=view.note,
        )


@strawberry.type(description="The answer to one upsertMembers item that carried a referralCode")
class ReferralSignup:
    index: int
    external_id: str
    status: ReferralStatus | None = strawberry.field(description="The member's referral, when it has one")
    error: str | None = strawberry.field(
        description="REFERRAL_CODE_UNKNOWN, REFERRALS_OFF (the item was not applied) or "
        "REFERRAL_SIGNUP_ONLY (an existing member: the code was ignored)"
    )
    message: str | None

    @classmethod
    def of(cls, outcome: ReferralOutcome) -> ReferralSignup:
        return cls(
            index=outcome.index,
            external_id=outcome.external_id,
            status=outcome.status,
            error=outcome.error,
            message=outcome.message,
        )


@strawberry.type
class ReferralPage:
    items: list[Referral]
    has_next_page: bool


def _referral_id(value: strawberry.ID) -> int:
    if not str(value).isdigit():
        raise InvalidInput(f"id: {str(value)[:40]!r} is not a referral id")
    return int(value)


@strawberry.type
class ReferralQueries:
    @strawberry.field(description="The program's referral settings; null until setReferralProgram")
    async def referral_program(self, info: Info) -> ReferralProgram | None:
        settings = await info.context.services.referrals.settings(info.context.principal.program_id)
        return None if settings is None else ReferralProgram.of(settings)

    @strawberry.field(description="The program's referrals in id order (status HELD: the reviewers' queue)")
    async def referrals(
        self,
        info: Info,
        status: ReferralStatus | None = None,
        first: int = 50,
        after: strawberry.ID | None = None,
    ) -> ReferralPage:
        items, more = await info.context.services.referrals.listing(
            info.context.principal.program_id,
            status,
            first,
            None if after is None else _referral_id(after),
        )
        return ReferralPage(items=[Referral.of(v) for v in items], has_next_page=more)


@strawberry.type
class ReferralMutations:
    @strawberry.mutation(
        description="Create or replace the program's referral settings (audited); points 0..1000000, "
        "waitDays 0..366"
    )
    async def set_referral_program(self, info: Info, input: ReferralProgramInput) -> ReferralProgram:
        settings = ReferralSettings(
            input.enabled, input.join_points, input.referrer_points, input.wait_days, input.event_type
        )
        saved = await info.context.services.referrals.set_program(
            info.context.principal.program_id, settings, actor=info.context.principal.operator
        )
        return ReferralProgram.of(saved)

    @strawberry.mutation(
        description="A reviewer's decision on a HELD referral: approve (the joining reward posts now, "
        "the referrer is paid when due) or refuse (BLOCKED; a note says why). Audited."
    )
    async def decide_referral(self, info: Info, id: strawberry.ID, approve: bool, note: str = "") -> Referral:
        principal = info.context.principal
        view = await info.context.services.referrals.decide(
            principal.program_id, _referral_id(id), approve=approve, note=note, actor=principal.operator
        )
        return Referral.of(view)
