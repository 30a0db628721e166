"""The demo program behind `make demo`: 120 members with 90 days of history, segments and tiers
that moved along it, points that expire after a year, a Gold-only reward, two promotions from today
(double points on weekends, 3x coffee for Gold), a few accruals held for
review, an OWNER and an admin of each other role, an integration key and a read-only key.

The history is replayed day by day with the clock set to each day (ReplayClock): segments
exist from the start, so their change log, and therefore their size history, is what the
engine would have recorded had it run all along; the time-flip scheduler runs after each day
and RFM/ABC are refreshed weekly, as a server and an operator's cron would have.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from api.cli_errors import CommandError
from api.demo_history import (
    HISTORY_DAYS,
    DemoMember,
    day_events,
    demo_members,
    held_accruals,
    referred_members,
)
from api.runtime import Services
from domain.auth.scopes import Scope
from domain.campaigns.definitions import TriggerDraft
from domain.coupons.pools import DiscountKind, PoolDraft
from domain.enums import AdminRole, TierDowngrade
from domain.errors import NotFound
from domain.events.service import MAX_BATCH
from domain.events.validation import EventDraft
from domain.governance.audit_log import SYSTEM
from domain.members.service import MemberUpsert
from domain.private_files import write_private
from domain.promotions.definitions import PromotionDraft
from domain.promotions.stacking import CapPeriod
from domain.referrals.payout import ReferralPayouts
from domain.referrals.program import ReferralSettings
from domain.segments.scheduler import TimeFlipScheduler
from domain.segments.service import SegmentDraft
from domain.segments.templates import TEMPLATES
from domain.tiers.ladder import LadderDraft, TierDraft
from gamification.challenges.definitions import ChallengeDraft
from gamification.leaderboards.boards import BoardDefinition, BoardMetric, BoardScope
from gamification.periods import PeriodKind
from gamification.rewards.catalogue import RewardDraft
from gamification.rewards.windows import WindowSpec

PROGRAM_KEY = "demo"
ADMIN_EMAIL = "admin@demo.local"
#: The key the demo prints for the dashboard: it reads segments and boards, and changes nothing.
READ_ONLY_SCOPES = frozenset({Scope.SEGMENTS_READ, Scope.LEADERBOARDS_READ})

#: The shipped trigger flows (docs/triggers.md): segment key -> its triggers.
DEMO_FLOWS: dict[str, list[TriggerDraft]] = {
    # welcome bonus: members entering NEW get 100 points, a welcome message and a welcome coupon
    "new_members": [
        TriggerDraft("ENTER", "AWARD_POINTS", points=100, reason="welcome bonus"),
        TriggerDraft("ENTER", "SEND_MESSAGE", template="welcome"),
        TriggerDraft("ENTER", "ISSUE_COUPON", coupon_pool_key="welcome"),
    ],
    # win-back: entering at-risk pays 5 % of lifetime purchases (50 to 500 points) and says so
    "at_risk": [
        TriggerDraft(
            "ENTER",
            "AWARD_POINTS",
            percent_of_lifetime_value=Decimal(5),
            min_points=50,
            max_points=500,
            reason="win-back reward",
        ),
        TriggerDraft("ENTER", "SEND_MESSAGE", template="win_back"),
    ],
    # VIP status: a message and a bonus on entering, a note on leaving
    "vip": [
        TriggerDraft("ENTER", "SEND_MESSAGE", template="vip_welcome"),
        TriggerDraft("ENTER", "AWARD_POINTS", points=250, reason="VIP welcome"),
        TriggerDraft("LEAVE", "SEND_MESSAGE", template="vip_farewell"),
    ],
    # reaching Gold on the tier ladder (docs/tiers.md): a bonus once per entry
    "tier-gold": [TriggerDraft("ENTER", "AWARD_POINTS", points=200, reason="welcome to Gold")],
}

#: Bronze/Silver/Gold on the last year's spend, kept 30 days after falling below (docs/tiers.md).
DEMO_LADDER = LadderDraft(
    "sum(purchase.amount, 365d)",
    (
        TierDraft("bronze", "Bronze", Decimal(0)),
        TierDraft("silver", "Silver", Decimal(5000), Decimal("1.25")),
        TierDraft("gold", "Gold", Decimal(15000), Decimal("1.5")),
    ),
    TierDowngrade.RECALCULATE.value,
    30,
)
#: The welcome coupon of members entering NEW (docs/promotions.md, "Coupons"): 10 % off, 30 days.
DEMO_WELCOME_POOL = PoolDraft(
    "welcome",
    "Welcome coupon",
    "10 % off your next purchase",
    DiscountKind.PERCENT.value,
    Decimal(10),
    None,
    30,
)
DEMO_WELCOME_PATTERN, DEMO_WELCOME_CODES = "WELCOME-####-????", 500
#: Points expire a year after they were earned (docs/ledger.md, "Points expiry").
DEMO_EXPIRY_DAYS = 365
#: 50 points for joining with a code, 200 to the referrer once the first purchase has stuck 14 days.
DEMO_REFERRALS = ReferralSettings(True, join_points=50, referrer_points=200, wait_days=14)


class ReplayClock:
    """The system clock, or a moment of the past while the demo replays its history."""

    def __init__(self) -> None:
        self._at: datetime | None = None

    def now(self) -> datetime:
        return self._at or datetime.now(UTC)

    def travel_to(self, at: datetime) -> None:
        self._at = at

    def resume(self) -> None:
        self._at = None


async def seed_demo(services: Services, data_dir: Path, clock: ReplayClock) -> dict[str, Any]:
    """Seed once; later runs return the credentials kept in data_dir/demo-credentials.json, which
    seeding writes last (DEMO_INCOMPLETE when the program exists without them).

    `services` must run on `clock`.
    """
    path = data_dir / "demo-credentials.json"
    try:
        await services.programs.get_by_key(PROGRAM_KEY)
    except NotFound:
        pass
    else:
        if path.exists():
            stored: dict[str, Any] = orjson.loads(path.read_bytes())
            missing = {"readOnlyKey", "roleAdmins"} - set(stored)  # seeded by an earlier version
            if "readOnlyKey" in missing:
                stored["readOnlyKey"] = await _read_only_key(services)
            if "roleAdmins" in missing:
                stored["roleAdmins"] = await _role_admins(services)
            if missing:
                _keep(path, stored)
            return stored
        raise CommandError(  # seeding takes up to a minute: Ctrl-C leaves a program without credentials
            "DEMO_INCOMPLETE",
            f"the demo in {data_dir} is incomplete (its seeding was interrupted, or {path.name} was "
            f"deleted): delete {data_dir} and run the demo again",
        )

    now = clock.now()
    rng = random.Random(7)
    members = demo_members(rng, now)
    program_id = await _replay_history(services, clock, members, rng, now)
    await _start_now(services, program_id, members)

    key = await services.auth.create_api_key(PROGRAM_KEY, "demo POS", None)
    credentials = {
        "program": PROGRAM_KEY,
        "admin": await _new_admin(services, ADMIN_EMAIL, AdminRole.OWNER),
        "apiKey": key.key,
        "readOnlyKey": await _read_only_key(services),
        "roleAdmins": await _role_admins(services),
        "members": len(members),
    }
    _keep(path, credentials)
    return credentials


async def _replay_history(
    services: Services, clock: ReplayClock, members: list[DemoMember], rng: random.Random, now: datetime
) -> int:
    """The program as it started HISTORY_DAYS ago, then each day's events at the day's end."""
    clock.travel_to(now - timedelta(days=HISTORY_DAYS + 1))
    program = await services.programs.create_program(PROGRAM_KEY, "Demo Coffee Club", "B2C")
    await services.programs.set_earning_rule(program.id, "login", None, 1, actor=SYSTEM)
    await services.programs.set_points_expiry(program.id, DEMO_EXPIRY_DAYS, actor=SYSTEM)
    await services.tiers.set_ladder(program.id, DEMO_LADDER, actor=SYSTEM)
    await services.referrals.set_program(program.id, DEMO_REFERRALS, actor=SYSTEM)
    referrals = referred_members(members, now)
    await _seed_gamification(services, program.id)  # before the history: challenges pay as it is recorded
    for template in TEMPLATES:
        if template.audience == "B2C":
            draft = SegmentDraft(
                template.key,
                template.name,
                template.kind,
                rule=template.rule,
                applies_tag=template.applies_tag,
            )
            await services.segments.create(program.id, draft, actor=SYSTEM)
    await services.segments.create(
        program.id,
        SegmentDraft("new_members", "New members", "DYNAMIC", rule='lifecycle = "NEW"'),
        actor=SYSTEM,
    )
    scheduler = TimeFlipScheduler(services.db, clock, services.segments.engine)
    payouts = ReferralPayouts(services.db, clock)
    waiting = sorted(members, key=lambda m: m.joined_at)
    for n_day in range(HISTORY_DAYS, -1, -1):
        day_end = now - timedelta(days=n_day)
        clock.travel_to(day_end)
        joined = [m.upsert for m in waiting if m.joined_at <= day_end]
        waiting = waiting[len(joined) :]
        if joined:
            await services.members.upsert_members(
                program.id, [await _with_code(services, program.id, m, referrals) for m in joined]
            )
        events = day_events(members, n_day, day_end, rng)
        for start in range(0, len(events), MAX_BATCH):
            await services.events.record_events(program.id, events[start : start + MAX_BATCH])
        while await scheduler.run_once():
            pass
        await payouts.drain()
        if n_day % 7 == 0:
            await services.segments.recompute(program.id)
    clock.resume()
    return program.id


async def _with_code(
    services: Services, program_id: int, member: MemberUpsert, referrals: dict[str, str]
) -> MemberUpsert:
    """The member's upsert, carrying its referrer's code when the demo has it join with one."""
    referrer = referrals.get(member.external_id)
    if referrer is None:
        return member
    found = await services.members.get(program_id, referrer)
    assert found is not None  # referrers joined long before
    return replace(member, referral_code=found.referral_code)


async def _start_now(services: Services, program_id: int, members: list[DemoMember]) -> None:
    """Today: the welcome coupons and the trigger flows (they act on changes from here on), the
    priority window, and the accruals the audit holds."""
    await services.coupons.set_pool(program_id, DEMO_WELCOME_POOL, actor=SYSTEM)
    await services.coupons.generate(
        program_id, DEMO_WELCOME_POOL.key, DEMO_WELCOME_PATTERN, DEMO_WELCOME_CODES, actor=SYSTEM
    )
    for segment_key, triggers in DEMO_FLOWS.items():
        await services.campaigns.set_triggers(program_id, segment_key, triggers, actor=SYSTEM)
    now = services.clock.now()
    window = WindowSpec("points", PeriodKind.MONTHLY, 10, now, now + timedelta(days=1))
    await services.rewards.set_window(program_id, "tumbler", window, actor=SYSTEM)
    held: list[EventDraft] = held_accruals(members, now)
    await services.events.record_events(program_id, held)
    await _seed_promotions(services, program_id)


#: Issue 21's demo promotions (docs/promotions.md), live from today (the history earned without them).
DEMO_PROMOTIONS = (
    PromotionDraft(
        "weekend-double",
        "Double points on weekends",
        "purchase",
        "event.weekday in [6, 7]",
        multiplier=Decimal(2),
        budget_points=50_000,
    ),
    PromotionDraft(
        "gold-coffee",
        "3x coffee for Gold",
        "purchase",
        'in_segment("tier-gold") and event.category = "coffee"',
        multiplier=Decimal(3),
        cap_points=300,
        cap_period=CapPeriod.WEEK,
        priority=10,
    ),
)


async def _seed_promotions(services: Services, program_id: int) -> None:
    for draft in DEMO_PROMOTIONS:
        await services.promotions.create(program_id, draft, actor=SYSTEM)


async def _new_admin(services: Services, email: str, role: AdminRole) -> dict[str, str]:
    password = secrets.token_urlsafe(12)
    admin = await services.auth.create_admin(PROGRAM_KEY, email, password, role)
    return {
        "email": admin.email,
        "role": role.value,
        "password": password,
        "totpSecret": admin.totp_secret,
        "provisioningUri": admin.provisioning_uri,
    }


async def _role_admins(services: Services) -> list[dict[str, str]]:
    """One admin per role below ADMIN (marketer@, reviewer@, viewer@), so every role can be tried."""
    domain = ADMIN_EMAIL.partition("@")[2]
    return [
        await _new_admin(services, f"{role.value.lower()}@{domain}", role)
        for role in (AdminRole.MARKETER, AdminRole.REVIEWER, AdminRole.VIEWER)
    ]


async def _read_only_key(services: Services) -> str:
    created = await services.auth.create_api_key(PROGRAM_KEY, "demo dashboard (read-only)", READ_ONLY_SCOPES)
    return created.key


def _keep(path: Path, credentials: dict[str, Any]) -> None:
    write_private(path, orjson.dumps(credentials, option=orjson.OPT_INDENT_2))


async def _seed_gamification(services: Services, program_id: int) -> None:
    """A visits board beside the built-in `points`, a weekly challenge, and three rewards (the
    tumbler gets its priority window for this month's top 10 today: `_start_now`; the lounge
    pass is for Gold members only)."""
    visits = BoardDefinition(
        "visits",
        "Most visits",
        BoardMetric.EVENT_COUNT,
        "visit",
        BoardScope.PROGRAM,
        None,
        (PeriodKind.ALL_TIME, PeriodKind.MONTHLY, PeriodKind.WEEKLY),
    )
    await services.leaderboards.set_board(program_id, visits, actor=SYSTEM)
    await services.challenges.set_challenge(
        program_id,
        ChallengeDraft("weekly-regular", "Three visits a week", "visit", 3, "WEEKLY", 30),
        actor=SYSTEM,
    )
    await services.rewards.set_reward(
        program_id,
        RewardDraft("free-coffee", "Free coffee", "Any size, any blend", 100, 500, True),
        actor=SYSTEM,
    )
    await services.rewards.set_reward(
        program_id, RewardDraft("tumbler", "Club tumbler", "Limited edition", 400, 20, True), actor=SYSTEM
    )
    await services.rewards.set_reward(
        program_id,
        RewardDraft("gold-lounge", "Lounge pass", "Gold members only", 300, 50, True, ("tier-gold",)),
        actor=SYSTEM,
    )
