"""Per-request DataLoaders: every relation resolved inside a list costs one query for the whole list."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from domain.coupons.reads import CouponView
from domain.coupons.service import CouponService
from domain.db.engine import Database
from domain.ledger.service import ExpiringPoints, LedgerPage, LedgerService
from domain.members.reads import (
    first_ledger_pages,
    first_member_pages_by_organization,
    members_by_id,
    organization_children,
    organizations_by_id,
)
from domain.members.service import MemberService, Page
from domain.members.timeline import EventView, recent_events, recent_segment_changes
from domain.models import Member, Organization, Segment
from domain.referrals.service import ReferralService, ReferralView
from domain.segments.service import ChangeView, SegmentService
from domain.segments.tags import TagService, TagView
from domain.tiers.service import MemberTierView, TierService
from gamification.challenges.progress import BadgeView, ProgressView
from gamification.challenges.service import BadgesKey, ChallengeService, MemberKey
from gamification.streaks import StreakKey, member_streaks

T = TypeVar("T")

#: (member id, first, after id)
LedgerKey = tuple[int, int, int | None]
#: (program id, organization id, first, after id)
OrgMembersKey = tuple[int, int, int, int | None]


#: (member id, withinDays)
ExpiringKey = tuple[int, int]

#: (program id, member id, joinedAt)
LifecycleKey = tuple[int, int, datetime]
#: (program id, member id)
TierKey = tuple[int, int]
#: (member id, first)
TimelineKey = tuple[int, int]


@dataclass
class Loaders:
    organization_by_id: DataLoader[int, Organization | None]
    #: organization id -> the organizations directly below it
    organization_children: DataLoader[int, list[Organization]]
    ledger_page_by_member: DataLoader[LedgerKey, LedgerPage]
    members_page_by_organization: DataLoader[OrgMembersKey, Page]
    tags_by_member: DataLoader[int, list[TagView]]
    segments_by_member: DataLoader[int, list[Segment]]
    size_by_segment: DataLoader[int, int]
    lifecycle_by_member: DataLoader[LifecycleKey, str]
    member_by_id: DataLoader[int, Member | None]
    #: (member id, event type) -> consecutive UTC days with an accepted event of the type
    streak_by_member: DataLoader[StreakKey, int]
    #: (program id, member id) -> current-period progress on every active challenge
    challenge_progress_by_member: DataLoader[MemberKey, list[ProgressView]]
    #: (member id, first) -> newest completions first
    badges_by_member: DataLoader[BadgesKey, list[BadgeView]]
    #: (program id, member id) -> the tier held, its qualifier measured now; None without a ladder
    tier_by_member: DataLoader[TierKey, MemberTierView | None]
    #: (member id, withinDays) -> unexpired points per expiry instant, soonest first
    expiring_by_member: DataLoader[ExpiringKey, list[ExpiringPoints]]
    #: (member id, first) -> its latest events, newest first
    events_by_member: DataLoader[TimelineKey, list[EventView]]
    #: (member id, first) -> its latest segment entries and exits, newest first
    segment_changes_by_member: DataLoader[TimelineKey, list[ChangeView]]
    #: member id -> the referrals it made, oldest first
    referrals_by_referrer: DataLoader[int, list[ReferralView]]
    #: member id -> the referral it joined with
    referral_by_referred: DataLoader[int, ReferralView | None]
    #: (member id, first) -> its latest coupon codes, newest first
    coupons_by_member: DataLoader[TimelineKey, list[CouponView]]


def build_loaders(
    db: Database,
    members: MemberService,
    ledger: LedgerService,
    segments: SegmentService,
    tags: TagService,
    tiers: TierService,
    coupons: CouponService,
) -> Loaders:
    async def load_members(ids: Sequence[int]) -> list[Member | None]:
        async with db.read() as session:
            found = await members_by_id(session, ids)
        return [found.get(i) for i in ids]

    async def load_organizations(ids: Sequence[int]) -> list[Organization | None]:
        async with db.read() as session:
            found = await organizations_by_id(session, ids)
        return [found.get(i) for i in ids]

    async def load_children(ids: Sequence[int]) -> list[list[Organization]]:
        async with db.read() as session:
            found = await organization_children(session, ids)
        return [found.get(i, []) for i in ids]

    async def load_ledger_pages(keys: Sequence[LedgerKey]) -> list[LedgerPage]:
        first_pages: dict[int, list[int]] = defaultdict(list)  # page size -> member ids
        for member_id, first, after in keys:
            if after is None:
                first_pages[first].append(member_id)
        results: dict[LedgerKey, LedgerPage] = {}
        for first, member_ids in first_pages.items():
            async with db.read() as session:
                pages = await first_ledger_pages(session, member_ids, first)
            for member_id, rows in pages.items():
                results[(member_id, first, None)] = LedgerPage(rows[:first], len(rows) > first)
        for key in keys:
            if key not in results:  # a later page: rare inside lists, one query each
                results[key] = await ledger.page(key[0], key[1], key[2])
        return [results[k] for k in keys]

    async def load_org_members(keys: Sequence[OrgMembersKey]) -> list[Page]:
        first_pages: dict[int, list[OrgMembersKey]] = defaultdict(list)  # page size -> keys
        for key in keys:
            if key[3] is None:
                first_pages[key[2]].append(key)
        results: dict[OrgMembersKey, Page] = {}
        for first, group in first_pages.items():
            async with db.read() as session:
                pages, totals = await first_member_pages_by_organization(
                    session, [k[1] for k in group], first
                )
            for key in group:
                rows = pages[key[1]]
                results[key] = Page(rows[:first], len(rows) > first, totals[key[1]])
        for key in keys:
            if key not in results:
                results[key] = await members.list_members(key[0], key[2], key[3], organization_id=key[1])
        return [results[k] for k in keys]

    async def load_tags(member_ids: Sequence[int]) -> list[list[TagView]]:
        found = await tags.tags_of(member_ids)
        return [found.get(i, []) for i in member_ids]

    async def load_segments(member_ids: Sequence[int]) -> list[list[Segment]]:
        found = await tags.segments_of(member_ids)
        return [found.get(i, []) for i in member_ids]

    async def load_sizes(segment_ids: Sequence[int]) -> list[int]:
        found = await tags.sizes(segment_ids)
        return [found.get(i, 0) for i in segment_ids]

    async def load_lifecycles(keys: Sequence[LifecycleKey]) -> list[str]:
        by_program: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
        for program_id, member_id, joined_at in keys:
            by_program[program_id].append((member_id, joined_at))
        stages: dict[int, str] = {}
        for program_id, wanted in by_program.items():
            stages.update(await segments.lifecycle_stages(program_id, wanted))
        return [stages[member_id] for _, member_id, _ in keys]

    # stateless: the request's reads need only the database and the clock
    challenges = ChallengeService(db, members.clock)

    async def load_streaks(keys: Sequence[StreakKey]) -> list[int]:
        async with db.read() as session:
            found = await member_streaks(session, keys, members.clock.now())
        return [found[k] for k in keys]

    async def load_progress(keys: Sequence[MemberKey]) -> list[list[ProgressView]]:
        found = await challenges.progress(keys)
        return [found[k] for k in keys]

    async def load_badges(keys: Sequence[BadgesKey]) -> list[list[BadgeView]]:
        found = await challenges.badges(keys)
        return [found[k] for k in keys]

    async def load_tiers(keys: Sequence[TierKey]) -> list[MemberTierView | None]:
        by_program: dict[int, list[int]] = defaultdict(list)
        for program_id, member_id in keys:
            by_program[program_id].append(member_id)
        found: dict[int, MemberTierView] = {}
        for program_id, member_ids in by_program.items():
            found.update(await tiers.member_tiers(program_id, member_ids))
        return [found.get(member_id) for _, member_id in keys]

    async def load_expiring(keys: Sequence[ExpiringKey]) -> list[list[ExpiringPoints]]:
        by_days: dict[int, list[int]] = defaultdict(list)
        for member_id, within_days in keys:
            by_days[within_days].append(member_id)
        found: dict[ExpiringKey, list[ExpiringPoints]] = {}
        for within_days, member_ids in by_days.items():
            for member_id, lots in (await ledger.expiring(member_ids, within_days)).items():
                found[(member_id, within_days)] = lots
        return [found[k] for k in keys]

    async def load_events(keys: Sequence[TimelineKey]) -> list[list[EventView]]:
        return await _by_page_size(keys, recent_events)

    async def load_segment_changes(keys: Sequence[TimelineKey]) -> list[list[ChangeView]]:
        return await _by_page_size(keys, recent_segment_changes)

    referrals = ReferralService(db, members.clock)  # stateless, like `challenges`

    async def load_made(member_ids: Sequence[int]) -> list[list[ReferralView]]:
        found = await referrals.made_by(member_ids)
        return [found.get(i, []) for i in member_ids]

    async def load_joined(member_ids: Sequence[int]) -> list[ReferralView | None]:
        found = await referrals.referred(member_ids)
        return [found.get(i) for i in member_ids]

    async def _by_page_size(
        keys: Sequence[TimelineKey],
        read: Callable[[AsyncSession, Sequence[int], int], Awaitable[dict[int, list[T]]]],
    ) -> list[list[T]]:
        by_first: dict[int, list[int]] = defaultdict(list)
        for member_id, first in keys:
            by_first[first].append(member_id)
        found: dict[TimelineKey, list[T]] = {}
        for first, member_ids in by_first.items():
            async with db.read() as session:
                for member_id, rows in (await read(session, member_ids, first)).items():
                    found[(member_id, first)] = rows
        return [found[k] for k in keys]

    async def load_coupons(keys: Sequence[TimelineKey]) -> list[list[CouponView]]:
        by_first: dict[int, list[int]] = defaultdict(list)
        for member_id, first in keys:
            by_first[first].append(member_id)
        found: dict[TimelineKey, list[CouponView]] = {}
        for first, member_ids in by_first.items():
            for member_id, views in (await coupons.recent(member_ids, first)).items():
                found[(member_id, first)] = views
        return [found[k] for k in keys]

    return Loaders(
        organization_by_id=DataLoader(load_organizations),
        organization_children=DataLoader(load_children),
        ledger_page_by_member=DataLoader(load_ledger_pages),
        members_page_by_organization=DataLoader(load_org_members),
        tags_by_member=DataLoader(load_tags),
        segments_by_member=DataLoader(load_segments),
        size_by_segment=DataLoader(load_sizes),
        lifecycle_by_member=DataLoader(load_lifecycles),
        member_by_id=DataLoader(load_members),
        streak_by_member=DataLoader(load_streaks),
        challenge_progress_by_member=DataLoader(load_progress),
        badges_by_member=DataLoader(load_badges),
        tier_by_member=DataLoader(load_tiers),
        expiring_by_member=DataLoader(load_expiring),
        events_by_member=DataLoader(load_events),
        segment_changes_by_member=DataLoader(load_segment_changes),
        referrals_by_referrer=DataLoader(load_made),
        referral_by_referred=DataLoader(load_joined),
        coupons_by_member=DataLoader(load_coupons),
    )
