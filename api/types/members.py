"""Program, Organization, Member and their connections."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, cast

import strawberry
from strawberry.scalars import JSON

from api.authorization import field_scope
from api.context import Info
from api.pagination import decode_cursor, encode_cursor, page_size
from api.types.challenges import Badge, ChallengeProgress, authorize_member_read
from api.types.coupons import Coupon
from api.types.enums import AbcClass, Channel, EventStatus, LifecycleStage, MemberKind, ProgramKind
from api.types.ledger import LedgerConnection, PageInfo, ledger_connection
from domain import models
from domain.auth.scopes import Scope
from domain.errors import Forbidden
from domain.ledger.service import check_within_days
from domain.members.service import Page, check_page_size
from domain.members.timeline import EventView
from domain.programs.service import ProgramSettings
from domain.segments.lifecycle import LifecycleThresholds
from gamification.challenges.definitions import check_event_type

if TYPE_CHECKING:
    from api.referrals import Referral
    from api.types.segments import Segment, SegmentChangeEvent
    from api.types.tiers import MemberTier


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

    @strawberry.field(description="Lifecycle thresholds in days: new, at-risk, lost (beyond the contract)")
    def lifecycle_thresholds(self) -> list[int]:
        t = LifecycleThresholds.from_settings(self.row.settings)
        return [t.new_days, t.at_risk_days, t.lost_days]

    @strawberry.field(description="IANA timezone bounding board and challenge periods (beyond the contract)")
    def timezone(self) -> str:
        return str(self.row.settings.get("timezone", "UTC"))

    @strawberry.field(description="Points expire this many days after they were earned; null = never")
    def points_expiry_days(self) -> int | None:
        return self.row.points_expiry_days

    @strawberry.field(
        description="Beyond the contract: an admin's adjustPoints of more points than this "
        "needs a TOTP step-up"
    )
    def adjustment_step_up_points(self) -> int:
        return ProgramSettings.from_json(self.row.settings).adjustment_step_up_points

    @strawberry.field(description="Events for unknown members create them (beyond the contract)")
    def auto_create_members(self) -> bool:
        return ProgramSettings.from_json(self.row.settings).auto_create_members

    @strawberry.field(description="recordEvents rejects events older than this many days (beyond contract)")
    def max_event_age_days(self) -> int:
        return ProgramSettings.from_json(self.row.settings).max_event_age_days


@strawberry.type(description="Points of one member that expire at one instant")
class PointsLot:
    points: int
    expires_at: datetime


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

    @strawberry.field(description="The organization above (the dealer a branch belongs to); null at the top")
    async def parent(self, info: Info) -> Organization | None:
        if self.row.parent_id is None:
            return None
        row = await info.context.loaders.organization_by_id.load(self.row.parent_id)
        return None if row is None else Organization(row=row)

    @strawberry.field(description="The organizations directly below, by externalId")
    async def children(self, info: Info) -> list[Organization]:
        rows = await info.context.loaders.organization_children.load(self.row.id)
        return [Organization(row=row) for row in rows]

    @strawberry.field
    async def members(self, info: Info, first: int | None = 50, after: str | None = None) -> MemberConnection:
        program_id = field_scope(info, Scope.MEMBERS_READ)
        size = page_size(first)
        check_page_size(size)
        key = (program_id, self.row.id, size, decode_cursor("member", after))
        return member_connection(await info.context.loaders.members_page_by_organization.load(key))


@strawberry.type
class Member:
    row: strawberry.Private[models.Member]
    #: Shown to another member (a member token reading a leaderboard): only id, externalId, kind
    #: and organization may be read; every other field is FORBIDDEN.
    public_view: strawberry.Private[bool] = False

    def _private(self) -> None:
        if self.public_view:
            raise Forbidden("a member token reads only the id, externalId, kind and organization of others")

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
        self._private()
        return cast(JSON, self.row.attributes)

    @strawberry.field(description="Channels the member accepts messages on, in preference order")
    def channels(self) -> list[Channel]:
        self._private()
        return [Channel(c) for c in self.row.channels]

    @strawberry.field(description="Posted points only")
    def points_balance(self) -> int:
        self._private()
        return self.row.points_balance

    @strawberry.field(description="Accruals held for fraud review")
    def pending_points(self) -> int:
        self._private()
        return self.row.pending_points

    @strawberry.field(description="Sign-up date given by the integration; defaults to createdAt")
    def joined_at(self) -> datetime:
        self._private()
        return self.row.joined_at

    @strawberry.field(description="Newest first")
    async def ledger(self, info: Info, first: int | None = 50, after: str | None = None) -> LedgerConnection:
        self._private()
        size = page_size(first)
        check_page_size(size)
        key = (self.row.id, size, decode_cursor("ledger", after))
        return ledger_connection(await info.context.loaders.ledger_page_by_member.load(key))

    @strawberry.field
    def created_at(self) -> datetime:
        self._private()
        return self.row.created_at

    @strawberry.field(description="Manual tags and those its segments apply, one per (key, source)")
    async def tags(self, info: Info) -> list[Tag]:
        self._private()
        views = await info.context.loaders.tags_by_member.load(self.row.id)
        return [Tag(key=v.key, source=v.source, since=v.since) for v in views]

    @strawberry.field(description="The segments the member is in now")
    async def segments(self, info: Info) -> list[Annotated[Segment, strawberry.lazy("api.types.segments")]]:
        self._private()
        from api.types.segments import Segment

        return [Segment(row=row) for row in await info.context.loaders.segments_by_member.load(self.row.id)]

    @strawberry.field(
        description="The code another member signs up with (upsertMembers referralCode); null once erased"
    )
    def referral_code(self) -> str | None:
        self._private()
        return self.row.referral_code

    @strawberry.field(description="The referrals this member made (as the referrer), oldest first")
    async def referrals(self, info: Info) -> list[Annotated[Referral, strawberry.lazy("api.referrals")]]:
        self._private()
        from api.referrals import Referral

        views = await info.context.loaders.referrals_by_referrer.load(self.row.id)
        return [Referral.of(v) for v in views]

    @strawberry.field(description="The referral this member joined with, if any")
    async def referred_by(self, info: Info) -> Annotated[Referral, strawberry.lazy("api.referrals")] | None:
        self._private()
        from api.referrals import Referral

        view = await info.context.loaders.referral_by_referred.load(self.row.id)
        return None if view is None else Referral.of(view)

    @strawberry.field(description="Null when the program has no tier ladder")
    async def tier(self, info: Info) -> Annotated[MemberTier, strawberry.lazy("api.types.tiers")] | None:
        self._private()
        from api.types.tiers import MemberTier

        view = await info.context.loaders.tier_by_member.load((self.row.program_id, self.row.id))
        return None if view is None else MemberTier.of(view)

    @strawberry.field(description="Null until the member has a purchase and RFM has been computed")
    def rfm(self) -> RfmScore | None:
        self._private()
        row = self.row
        if row.rfm_r is None or row.rfm_f is None or row.rfm_m is None or row.rfm_label is None:
            return None
        return RfmScore(r=row.rfm_r, f=row.rfm_f, m=row.rfm_m, label=row.rfm_label)

    @strawberry.field(description="Null until the member has a purchase and ABC has been computed")
    def abc_class(self) -> AbcClass | None:
        self._private()
        return None if self.row.abc_class is None else AbcClass(self.row.abc_class)

    @strawberry.field(
        description="Beyond the contract. Probability of no purchase in the next 7 days, from the "
        "program's latest churn model (trainChurnModel); null until scored or without purchases"
    )
    def churn_risk_7d(self, info: Info) -> float | None:
        self._private()
        authorize_member_read(info, self.row)
        return self.row.churn_risk_7d

    @strawberry.field(description="Live, from the program's lifecycle thresholds")
    async def lifecycle(self, info: Info) -> LifecycleStage:
        self._private()
        key = (self.row.program_id, self.row.id, self.row.joined_at)
        return LifecycleStage(await info.context.loaders.lifecycle_by_member.load(key))

    @strawberry.field(
        description="Consecutive days of the program's timezone up to today (or yesterday when none "
        "yet today) with an accepted event of the type: `streak(type)` of the segment rules; 0 without events"
    )
    async def streak(self, info: Info, event_type: str) -> int:
        self._private()
        authorize_member_read(info, self.row)
        key = (self.row.id, check_event_type(event_type))
        return await info.context.loaders.streak_by_member.load(key)

    @strawberry.field(
        description="Progress on every active challenge in its current period, by challenge key"
    )
    async def challenges(self, info: Info) -> list[ChallengeProgress]:
        self._private()
        authorize_member_read(info, self.row)
        key = (self.row.program_id, self.row.id)
        return [
            ChallengeProgress.of(v) for v in await info.context.loaders.challenge_progress_by_member.load(key)
        ]

    @strawberry.field(
        description="Unexpired points that expire within the days, soonest first, one lot per expiry instant"
    )
    async def expiring_points(self, info: Info, within_days: int | None = 30) -> list[PointsLot]:
        self._private()
        authorize_member_read(info, self.row)
        days = 30 if within_days is None else within_days
        check_within_days(days)
        lots = await info.context.loaders.expiring_by_member.load((self.row.id, days))
        return [PointsLot(points=lot.points, expires_at=lot.expires_at) for lot in lots]

    @strawberry.field(description="The member's coupon codes, newest issued first (first 0..500)")
    async def coupons(self, info: Info, first: int | None = 50) -> list[Coupon]:
        self._private()
        authorize_member_read(info, self.row)
        size = page_size(first)
        check_page_size(size)
        return [
            Coupon(view=v) for v in await info.context.loaders.coupons_by_member.load((self.row.id, size))
        ]

    @strawberry.field(
        description="Beyond the contract: the member's latest events by occurredAt, newest first "
        "(first 0..500; their properties are not shown)"
    )
    async def events(self, info: Info, first: int | None = 50) -> list[MemberEvent]:
        self._private()
        authorize_member_read(info, self.row)
        size = page_size(first)
        check_page_size(size)
        return [
            MemberEvent.of(v) for v in await info.context.loaders.events_by_member.load((self.row.id, size))
        ]

    @strawberry.field(
        description="Beyond the contract: the member's latest segment entries and exits, newest first "
        "(first 0..500)"
    )
    async def segment_changes(
        self, info: Info, first: int | None = 50
    ) -> list[Annotated[SegmentChangeEvent, strawberry.lazy("api.types.segments")]]:
        from api.types.segments import SegmentChangeEvent

        self._private()
        authorize_member_read(info, self.row)
        size = page_size(first)
        check_page_size(size)
        views = await info.context.loaders.segment_changes_by_member.load((self.row.id, size))
        return [SegmentChangeEvent.of(v) for v in views]

    @strawberry.field(description="Challenges completed, one per period, newest first")
    async def badges(self, info: Info, first: int | None = 50) -> list[Badge]:
        self._private()
        authorize_member_read(info, self.row)
        size = page_size(first)
        check_page_size(size)
        return [Badge.of(v) for v in await info.context.loaders.badges_by_member.load((self.row.id, size))]


@strawberry.type(description="An event recorded for the member (beyond the contract)")
class MemberEvent:
    external_id: str
    type: str
    occurred_at: datetime
    amount: Decimal | None
    status: EventStatus
    points_awarded: int = strawberry.field(description="Posted points; 0 when held, blocked or rejected")

    @classmethod
    def of(cls, view: EventView) -> MemberEvent:
        return cls(
            external_id=view.external_id,
            type=view.type,
            occurred_at=view.occurred_at,
            amount=view.amount,
            status=EventStatus(view.status),
            points_awarded=view.points_awarded,
        )


@strawberry.type
class Tag:
    key: str = strawberry.field(description='e.g. "VIP", "active", "non-compliant"')
    source: str = strawberry.field(description='"manual" or the key of the segment that applies it')
    since: datetime


@strawberry.type(description="1..5 each (5 best); label e.g. Champions")
class RfmScore:
    r: int
    f: int
    m: int
    label: str


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
